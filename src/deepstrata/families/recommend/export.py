"""A recommendation run's export plan: the scorer, a user (or their history) in, a score per item out.

``recommend`` scores every item for a user with the model (``model_scorer``: matrix
factorisation reads the user's index, SASRec their last ``max_len`` items), then masks the
items the user has seen, takes the top k, and answers an unknown user with the most popular
items. The scoring is the model and goes into the wrapper; the masking, the top k and the
fallback are bookkeeping over ids, which the contract spells out with the id lists and
the popular items, so that a consumer ranks exactly as ``deepstrata recommend`` does.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from deepstrata.export.plan import SCORE_TOLERANCE, Dim, ExportPlan, TensorSpec
from deepstrata.families.recommend.tasks import padded_sequences

BATCH_SIZES = (8, 3)
POPULAR = 100


class UserScores(nn.Module):
    """``users [N]`` (matrix factorisation) or ``sequences [N, L]`` (SASRec) -> ``scores [N, items]``."""

    def __init__(self, model: nn.Module, sequences: bool) -> None:
        super().__init__()
        self.model, self.sequences = model, sequences

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.model.user_scores(None, x) if self.sequences else self.model.user_scores(x, None)
        return scores.float()


def export_plan(run) -> ExportPlan:
    from deepstrata.families.recommend.serve import served

    state = served(run)
    model = run.load_model().eval()
    max_len = getattr(model, "max_len", None)
    sample = run.family.inspect_sample(run, None, samples=sum(BATCH_SIZES), seed=0, data_dir=None)
    users = sample.extra["users"]
    cut = min(BATCH_SIZES[0], len(users) - 2)
    parts = [users[:cut], users[cut:]]
    if max_len is None:
        batches = [(torch.from_numpy(np.asarray(p, dtype=np.int64)),) for p in parts]
        spec = TensorSpec("users", "int64", ("batch",), "user indices: positions in 'user_ids'")
        dims = [Dim("batch")]
        takes = "the user's index in user_ids"
    else:
        batches = [(padded_sequences([state.histories[u] for u in p], max_len),) for p in parts]
        spec = TensorSpec("sequences", "int64", ("batch", "length"),
                          "each user's last items in time order, as item index + 1 (0 = padding), left-padded")
        dims = [Dim("batch"), Dim("length", 1, int(max_len))]
        takes = (f"the user's last {max_len} items (positions in item_ids, plus 1), oldest first, left-padded "
                 "with 0 to the batch's longest (any length up to max_len gives the same scores)")
    order = np.argsort(-state.popularity.numpy(), kind="stable")[:POPULAR]
    return ExportPlan(
        module=UserScores(model, max_len is not None).eval(),
        inputs=[spec],
        outputs=[TensorSpec("scores", "float32", ("batch", state.log.num_items),
                            "a score per item (order of 'item_ids'); higher ranks first")],
        dims=dims,
        batches=batches,
        batch_source=f"{len(users)} users of the run's log",
        contract={
            "recommendation": {
                "input": takes,
                "max_len": max_len,
                "ranking": "recommend masks the items in the user's history (-inf), then takes the k highest scores",
                "unknown_users": "answered with popular_items (most events first), flagged as a fallback",
                "user_ids": list(state.log.user_ids),
                "item_ids": list(state.log.item_ids),
                "popular_items": [state.log.item_ids[i] for i in order.tolist()],
            },
        },
        tolerance=SCORE_TOLERANCE,
        relative=True,
    )
