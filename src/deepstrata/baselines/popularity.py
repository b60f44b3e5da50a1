"""Most-popular: every user gets the items with the most training interactions.

The floor any recommender must clear, and the fallback for users nobody has seen.
"""

from __future__ import annotations

import numpy as np
import torch


class Popularity:
    """Scores are training interaction counts, the same for every user."""

    name = "popularity"

    def __init__(self, train_items: np.ndarray, num_items: int) -> None:
        self.counts = torch.from_numpy(np.bincount(train_items, minlength=num_items).astype(np.float32))

    def scores(self, users: np.ndarray, histories: list[np.ndarray]) -> torch.Tensor:
        """[B, num_items]: the count row repeated for each user."""
        return self.counts.expand(len(users), -1)

    def settings(self) -> dict:
        return {"items_with_interactions": int((self.counts > 0).sum())}
