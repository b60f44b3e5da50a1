"""What a server is started with, checked before the run is even loaded.

Security by default: the server binds 127.0.0.1, where only this machine can reach it. Any
other address exposes the model to a network, so it needs an API key (``--api-key`` or the
environment variable ``DEEPSTRATA_API_KEY``), or an explicit ``--insecure`` that says the
exposure is meant. The check is here, not in the CLI, so that ``serve.serve(...)`` from
Python refuses the same way.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import asdict, dataclass

from deepstrata.errors import ConfigError

API_KEY_ENV = "DEEPSTRATA_API_KEY"
SETTINGS_ENV = "DEEPSTRATA_SERVE_SETTINGS"   # how ``--workers N`` hands the settings to its worker processes
MAX_ITEMS = 256                              # inputs (texts, images) one request may carry
MAX_TEXT_CHARS = 100_000                     # characters in one text (the tokenizer keeps max_length tokens)
MAX_K = 1000                                 # the largest ``k`` of /recommend and /similar


@dataclass(frozen=True)
class ServeSettings:
    """One server's settings; ``check`` refuses impossible values and an unprotected public bind."""

    run: str
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 64
    max_wait_ms: float = 5.0
    workers: int = 1
    api_key: str | None = None
    insecure: bool = False
    max_body_mb: float = 16.0

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    def check(self) -> "ServeSettings":
        for name, value, low in (("--port", self.port, 0), ("--max-batch", self.max_batch, 1),
                                 ("--workers", self.workers, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low or (name == "--port"
                                                                                      and value > 65535):
                raise ConfigError(f"{name}: got {value!r}, expected an integer of at least {low}"
                                  + (" and at most 65535" if name == "--port" else ""))
        if not 0 <= self.max_wait_ms <= 1000:
            raise ConfigError(f"--max-wait-ms: got {self.max_wait_ms!r}, expected 0 to 1000 milliseconds")
        if not 0 < self.max_body_mb <= 1024:
            raise ConfigError(f"--max-body-mb: got {self.max_body_mb!r}, expected more than 0 and at most 1024")
        if self.api_key is not None and len(self.api_key) < 8:
            raise ConfigError("--api-key: at least 8 characters (a key anyone can guess protects nothing)")
        if not is_loopback(self.host) and self.api_key is None and not self.insecure:
            raise ConfigError(f"--host {self.host}: binding beyond this machine needs --api-key KEY (or "
                              f"{API_KEY_ENV}); pass --insecure to serve without one")
        return self

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> "ServeSettings":
        return cls(**json.loads(os.environ[SETTINGS_ENV]))


def is_loopback(host: str) -> bool:
    """Whether ``host`` only this machine reaches: ``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_api_key(given: str | None) -> str | None:
    """``--api-key``, else ``DEEPSTRATA_API_KEY`` (empty counts as unset)."""
    return given or os.environ.get(API_KEY_ENV) or None
