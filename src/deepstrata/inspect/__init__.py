"""Inspection: what every named layer of a run learned, and how abstraction grows with depth.

``inspect_run(run)`` measures (layer-wise linear probes against a random-init control,
linear CKA), maps (PCA / t-SNE) and pictures (filters, activation maps, top crops) a
run's layers and writes ``RUN/inspect/report.html``; ``features(run, x, layer)`` reads one
layer. The pieces (``taps``, ``probes``, ``cka``, ``projections``, ``visuals``) work on any
model that names its layers.
"""

from deepstrata.inspect.api import InspectionResult, features, inspect_run
from deepstrata.inspect.taps import LayerFeatures, extract, pool, tap

__all__ = ["InspectionResult", "LayerFeatures", "extract", "features", "inspect_run", "pool", "tap"]
