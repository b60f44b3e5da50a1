"""Most-popular and item-kNN against small hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepstrata.baselines.itemknn import ItemKNN, cosine_neighbours, user_item_matrix
from deepstrata.baselines.popularity import Popularity


def test_popularity_counts_training_interactions():
    pop = Popularity(np.array([0, 2, 2, 1, 2]), 4)
    scores = pop.scores(np.array([0, 1]), [np.array([0]), np.array([])])
    assert scores.shape == (2, 4) and scores[1].tolist() == [1.0, 1.0, 3.0, 0.0]


def test_cosine_neighbours_by_hand():
    # Users: u0 has items 0, 1; u1 has 0, 1, 2; u2 has 2.
    matrix = user_item_matrix(np.array([0, 0, 1, 1, 1, 2]), np.array([0, 1, 0, 1, 2, 2]), 3, 3)
    index, value = cosine_neighbours(matrix, k=2)
    # cos(0, 1) = 2 / (sqrt2 * sqrt2) = 1; cos(0, 2) = 1 / (sqrt2 * sqrt2) = 0.5
    assert index[0].tolist() == [1, 2] and value[0] == pytest.approx([1.0, 0.5])
    assert index[2].tolist() == [0, 1] and value[2] == pytest.approx([0.5, 0.5])


def test_itemknn_scores_sum_neighbour_similarity():
    knn = ItemKNN(np.array([0, 0, 1, 1, 1, 2]), np.array([0, 1, 0, 1, 2, 2]), 3, 4, max_k=3)
    scores = knn.scores(np.array([0]), [np.array([0])])
    assert scores[0].tolist() == pytest.approx([0.0, 1.0, 0.5, 0.0])
    knn.set_k(1)
    assert knn.scores(np.array([0]), [np.array([0, 2])])[0].tolist() == pytest.approx(
        [0.5, 1.0, 0.0, 0.0])  # item 0's nearest is 1; item 2's nearest (tie 0/1 at 1/2) is 0
    assert math.isclose(knn.settings()["neighbours"], 1)
