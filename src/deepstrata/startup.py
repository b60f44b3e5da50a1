"""What a fit sets going before torch is imported: the scikit-learn helper of its baselines.

Kept apart from ``deepstrata.api`` because importing the API imports torch, and the point is
to start the helper first (``deepstrata.baselines.helper``: scikit-learn's import then runs
beside torch's, on another core). The program (``cli.run``) calls ``before_fit`` first thing in
``fit`` and ``transfer``; nothing else needs it, and a fit without it runs its baselines in its
own process.
"""

from __future__ import annotations

import os


def before_fit(baselines: bool | None, devices: int | None, config: str | None = None) -> None:
    """Start the baselines' helper unless the fit skips baselines or is not the process that fits them.

    ``--devices N`` (N > 1) launches worker processes that fit in this one's place, and under
    torchrun only rank 0 fits the baselines; neither starts a helper here. A flag not given is
    read from the ``--config`` file (``baselines``, ``train.devices``), as the fit will read it.
    """
    if config is not None and (baselines is None or devices is None):
        in_file = _config_keys(config)
        baselines = in_file.get("baselines") if baselines is None else baselines
        devices = in_file.get("devices") if devices is None else devices
    if baselines is False or (devices if isinstance(devices, int) else 1) > 1 or os.environ.get("RANK", "0") != "0":
        return
    from deepstrata.baselines import helper

    helper.start()


def _config_keys(path: str) -> dict:
    """``baselines`` and ``train.devices`` of a config file; nothing when it cannot be read (the fit says why)."""
    try:
        import yaml

        with open(path, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
    except Exception:  # noqa: BLE001 — any problem with the file is the fit's to report, in one line
        return {}
    if not isinstance(raw, dict):
        return {}
    train = raw.get("train") if isinstance(raw.get("train"), dict) else {}
    return {"baselines": raw.get("baselines"), "devices": train.get("devices")}
