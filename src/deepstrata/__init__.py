"""deepstrata: deep learning on raw data, measured against hand-engineered baselines.

Public API::

    import deepstrata as ds
    run = ds.fit(data="digits", model="cnn")
    run.evaluate("digits"); run.predict("some/images/"); run.compare()
    run = ds.load("runs/demo")
"""

__version__ = "0.1.0"

from deepstrata.api import fit  # noqa: E402
from deepstrata.config import DataConfig, ModelConfig, RunConfig, TrainConfig, load_config  # noqa: E402
from deepstrata.errors import ConfigError, DataError, DeepstrataError, RunError  # noqa: E402
from deepstrata.run import Run, load  # noqa: E402
from deepstrata import data  # noqa: E402  (ds.data.text_table …)

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
