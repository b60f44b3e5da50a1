"""One vector per example from a named layer, or from ``features``: the vector the head classifies.

``embed``, ``search`` and the compactness figures of ``inspect`` all read vectors this
way, so that an index and a query, or a report and an index, mean the same thing by a
layer name. ``features`` (the default) is the model's ``forward_features``: the layer
before the head pooled exactly as the head pools it (max over space for the CNN, the
final norm and the masked mean or [CLS] for the Transformer, the user vector of a
recommender). Any other name is a layer of the model, pooled as ``taps.pool`` pools it
(spatial mean, masked token mean), as ``features`` and ``inspect`` read it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from deepstrata.errors import ConfigError
from deepstrata.inspect.taps import batch_mask, batches, extract, layer_names, model_device, to_model_input

FEATURES = "features"


def check_layer(model: nn.Module, layer: str | None, *, option: str = "--layer") -> str:
    """``layer``, or ``features`` for None; an unknown name is refused listing the model's layers."""
    if layer is None or layer == FEATURES:
        return FEATURES
    known = layer_names(model)
    if layer not in known:
        raise ConfigError(f"{option}: unknown layer {layer!r}; this model has: {', '.join(known)}, or "
                          f"{FEATURES} (the default: the vector the head classifies)")
    return layer


@torch.inference_mode()
def layer_vectors(model: nn.Module, inputs, layer: str, *, mask: torch.Tensor | None = None, trim: bool = False,
                  batch_size: int = 256) -> np.ndarray:
    """``[N, D]`` float32 vectors of ``layer`` (a name checked by ``check_layer``) for ``inputs``.

    ``inputs``, ``mask`` and ``trim`` as ``taps.extract`` takes them (uint8 images are
    scaled to [0, 1]; token ids are cut after each batch's longest text with ``trim``).
    """
    if layer != FEATURES:
        return extract(model, inputs, [layer], mask=mask, trim=trim, batch_size=batch_size).pooled[layer]
    model.eval()
    device = model_device(model)
    parts = []
    for span, batch in batches(inputs, batch_size):
        batch = tuple(to_model_input(part, device) for part in batch)
        if trim:
            masks = batch_mask(model, batch, None if mask is None else mask[span].to(device))
            if masks is not None and masks.dim() == 2 and masks.any():
                length = int(masks.any(0).nonzero().max()) + 1
                batch = tuple(part[:, :length] if part.dim() >= 2 and part.shape[1] == masks.shape[1] else part
                              for part in batch)
        parts.append(model.forward_features(*batch).float().reshape(len(batch[0]), -1).cpu())
    if not parts:
        return np.zeros((0, int(getattr(model, "feature_dim", 0))), dtype=np.float32)
    return torch.cat(parts).numpy()
