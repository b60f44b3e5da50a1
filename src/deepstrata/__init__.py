"""deepstrata: deep learning on raw data, measured against hand-engineered baselines.

Public API::

    import deepstrata as ds
    run = ds.fit(data="digits", model="cnn")
    run.evaluate("digits"); run.predict("some/images/"); run.compare()
    new = ds.transfer("efficientnet-lite0", "photos/", labels_per_class=10, mode="finetune")
    run = ds.load("runs/demo")
    ds.runs("runs/")  # a row per run directory: settings, test metric, best baseline, status

The public names are imported on first use (PEP 562), so that ``import deepstrata``
(and ``deepstrata --help``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "fit": "deepstrata.api",
    "transfer": "deepstrata.api",
    "ConfigError": "deepstrata.errors",
    "DataError": "deepstrata.errors",
    "DeepstrataError": "deepstrata.errors",
    "RunError": "deepstrata.errors",
    "DataConfig": "deepstrata.config",
    "ModelConfig": "deepstrata.config",
    "RunConfig": "deepstrata.config",
    "TrainConfig": "deepstrata.config",
    "load_config": "deepstrata.config",
    "Run": "deepstrata.run",
    "load": "deepstrata.run",
    "runs": "deepstrata.runs_table",
}
_LAZY_MODULES = ("data",)  # ds.data.text_table …

if TYPE_CHECKING:
    from deepstrata import data  # noqa: F401
    from deepstrata.api import fit, transfer  # noqa: F401
    from deepstrata.config import DataConfig, ModelConfig, RunConfig, TrainConfig, load_config  # noqa: F401
    from deepstrata.errors import ConfigError, DataError, DeepstrataError, RunError  # noqa: F401
    from deepstrata.run import Run, load  # noqa: F401
    from deepstrata.runs_table import runs  # noqa: F401


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _LAZY_MODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_LAZY_MODULES))


__all__ = [
    "ConfigError",
    "DataConfig",
    "DataError",
    "DeepstrataError",
    "ModelConfig",
    "Run",
    "RunConfig",
    "RunError",
    "TrainConfig",
    "fit",
    "load",
    "load_config",
]
