"""Running the app under uvicorn: threads, worker processes, and a shutdown that finishes its requests.

uvicorn handles SIGTERM and SIGINT itself: it stops accepting connections, lets the
requests in flight finish (the app's micro-batches included), runs the app's shutdown and
returns, and ``serve`` returns 0. With ``workers`` above 1 uvicorn starts that many
processes, each loading the run itself (``app_from_env``: a factory, since a process cannot
be handed a live app); torch's threads are shared out so the workers do not oversubscribe
the cores.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from contextlib import contextmanager

from deepstrata.errors import ConfigError
from deepstrata.serve.settings import SETTINGS_ENV, ServeSettings


def torch_threads(workers: int) -> int:
    """Intra-op threads per worker: its share of the cores less one, for the event loop and the decoding
    that run beside each forward pass; at least one. More threads than free cores cost far more than they
    give: on the 2-core machine a batch-1 forward took 1.3 ms on one thread and 240 ms on two while the
    cores were busy (torch's threads spin and wait for each other)."""
    import torch

    threads = max(1, (os.cpu_count() or 1) // workers - 1)
    torch.set_num_threads(threads)
    return threads


@contextmanager
def stops_cleanly():
    """While uvicorn serves: SIGTERM and SIGINT only stop it. uvicorn drains, then re-raises the signal it
    caught to the handler it found; with Python's defaults that would end the process by the signal (-15) or
    as a KeyboardInterrupt, although every request was answered. The handler found here just notes it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a taken port or a foreign address is a one-line refusal."""
    try:
        return socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as err:
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({err.strerror or err})") from None


def app_from_env():
    """The app of the run and settings in ``DEEPSTRATA_SERVE_SETTINGS`` (each ``--workers`` process calls it)."""
    from deepstrata.run import load
    from deepstrata.serve.application import build_app

    settings = ServeSettings.from_env()
    torch_threads(settings.workers)
    return build_app(load(settings.run), settings)


def serve(settings: ServeSettings, *, say=print) -> int:
    """Serve until SIGTERM or SIGINT; returns 0 once the requests in flight have been answered."""
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("serve needs FastAPI and uvicorn: pip install 'deepstrata[serve]'") from None
    settings = settings.check()
    scheme_host = f"[{settings.host}]" if ":" in settings.host else settings.host
    if settings.workers == 1:
        from deepstrata.run import load
        from deepstrata.serve.application import build_app

        sock = bind(settings.host, settings.port)
        threads = torch_threads(1)
        app = build_app(load(settings.run), settings)
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                                timeout_graceful_shutdown=30, access_log=False)
        server = uvicorn.Server(config)
        port, plural = sock.getsockname()[1], "s" if threads > 1 else ""
        say(f"serving {settings.run} on http://{scheme_host}:{port} ({threads} torch thread{plural}, "
            f"max batch {settings.max_batch}, max wait {settings.max_wait_ms:g} ms"
            f"{', API key required' if settings.api_key else ''}); Ctrl-C or SIGTERM stops it", flush=True)
        with stops_cleanly():
            server.run(sockets=[sock])
        return 0
    from deepstrata.run import load

    load(settings.run).model  # noqa: B018 - refuse a broken run once, before starting the workers
    os.environ[SETTINGS_ENV] = settings.to_env()
    say(f"serving {settings.run} on http://{scheme_host}:{settings.port} with {settings.workers} worker processes; "
        "Ctrl-C or SIGTERM stops it", flush=True)
    with stops_cleanly():
        uvicorn.run("deepstrata.serve.server:app_from_env", factory=True, host=settings.host, port=settings.port,
                    workers=settings.workers, log_level="warning", timeout_graceful_shutdown=30, access_log=False)
    return 0
