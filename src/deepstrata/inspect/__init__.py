"""Inspection: what every named layer of a run learned, and how abstraction grows with depth.

``inspect_run(run)`` measures (layer-wise linear probes against a random-init control,
linear CKA), maps (PCA / t-SNE) and pictures (filters, activation maps, top crops) a
run's layers and writes ``RUN/inspect/report.html``; ``features(run, x, layer)`` reads one
layer. The pieces (``taps``, ``probes``, ``cka``, ``projections``, ``visuals``) work on any
model that names its layers.
"""

from deepstrata.inspect import api as _api
from deepstrata.inspect.api import InspectionResult, features
from deepstrata.inspect.taps import LayerFeatures, extract, pool, tap


def inspect_run(run, *args, **kwargs) -> InspectionResult:
    """``inspect.api.inspect_run`` for a ``Run`` or a run directory (opened here: this package's face is
    public API, above ``deepstrata.run``; the measuring code below it only ever gets a ``Run``)."""
    from deepstrata.run import Run

    return _api.inspect_run(run if isinstance(run, Run) else Run(run), *args, **kwargs)

__all__ = ["InspectionResult", "LayerFeatures", "extract", "features", "inspect_run", "pool", "tap"]
