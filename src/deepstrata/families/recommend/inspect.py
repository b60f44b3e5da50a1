"""What a recommender learned: its item space, and how its layers represent users.

An interaction log has no class labels, so no probes here; the per-example layers are
read on a sample of users (their histories from the run's log) and compared by CKA and
projections, coloured by how long each user's history is. The item space gets its own
views: nearest neighbours of a few popular items — in the trained model and at random
initialisation, for contrast — and a 2-D map of the items coloured by popularity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from deepstrata.errors import ConfigError, DataError
from deepstrata.inspect.data import InspectData, sample_rows
from deepstrata.inspect.neighbours import NeighbourTable, columns_to_rows, cosine_neighbours

QUERY_ITEMS = 4
NEIGHBOURS = 8
ITEM_MAP_SAMPLE = 600


def _terciles(values: np.ndarray, unit: str) -> tuple[np.ndarray, list[str]]:
    """Labels 0/1/2 for the lower, middle and upper third of ``values``, and their names."""
    low, high = np.quantile(values, [1 / 3, 2 / 3])
    labels = np.digitize(values, [low, high], right=True)
    names = [f"≤{low:.0f} {unit}", f"{low:.0f}–{high:.0f} {unit}", f">{high:.0f} {unit}"]
    return labels.astype(np.int64), names


def _model_inputs(model, histories: list[np.ndarray], users: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What the recommender reads per user: its left-padded history (sequential models) or its index."""
    from deepstrata.families.recommend.tasks import padded_sequences

    if hasattr(model, "max_len"):
        sequences = padded_sequences(histories, model.max_len)
        return sequences, sequences != 0
    return torch.from_numpy(np.asarray(users, dtype=np.int64)), None


def user_inputs(run, x) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inputs of users: ``x`` a list of user ids, or the run's own source (every user)."""
    from deepstrata.families.recommend.serve import served

    state = served(run)
    if _is_own_source(run, x, state):
        users = np.arange(state.log.num_users)
    else:
        keys = [str(u) for u in ([x] if isinstance(x, (str, int)) else x)]
        unknown = [k for k in keys if k not in state.user_index]
        if unknown:
            raise DataError(f"{run.path}: unknown user {unknown[0]!r} (the run knows {state.log.num_users} users); "
                            "give user ids, or the run's own data source for every user")
        users = np.array([state.user_index[k] for k in keys], dtype=np.int64)
    return _model_inputs(run.model, [state.histories[u] for u in users], users)


ITEM_TABLE = "item_embedding"
"""The layer whose features are the item table: one row per item, not per user."""


def _is_own_source(run, x, state) -> bool:
    return x is None or (isinstance(x, (str, Path)) and str(x) in (run.config.data.source, state.log.source))


def user_ids(run, x) -> list[str]:
    """The user ids of the rows ``user_inputs`` gives for ``x``."""
    from deepstrata.families.recommend.serve import served

    state = served(run)
    if _is_own_source(run, x, state):
        return list(state.log.user_ids)
    return [str(u) for u in ([x] if isinstance(x, (str, int)) else x)]


def item_table(run, x=None) -> tuple[np.ndarray, list[str]]:
    """The learned item vectors ``[items, D]`` (what ``similar`` ranks by) and the item id of each row.

    ``x``: the run's own source (or ``None``) for every item, in the run's item order; else item ids.
    """
    from deepstrata import runfiles
    from deepstrata.families.recommend.serve import served

    state = served(run)
    with torch.inference_mode():
        vectors = run.model.item_features().float().cpu().numpy()
    if len(vectors) != state.log.num_items:
        raise runfiles.damaged(run.path / "vocab.json", f"{state.log.num_items} item ids for the model's "
                                                        f"{len(vectors)} item vectors")
    if _is_own_source(run, x, state):
        return vectors, list(state.log.item_ids)
    keys = [str(i) for i in ([x] if isinstance(x, (str, int)) else x)]
    unknown = [k for k in keys if k not in state.item_index]
    if unknown:
        raise DataError(f"{run.path}: unknown item {unknown[0]!r} (the run knows {state.log.num_items} items, "
                        f"e.g. {', '.join(state.log.item_ids[:3])}); give item ids, or the run's own data source "
                        "for every item")
    return vectors[[state.item_index[k] for k in keys]], keys


def load_user_sample(run, data: str | None = None, *, samples: int = 2000, seed: int = 0) -> InspectData:
    """Up to ``samples`` users with at least one event: their histories (or ids) as the model takes them."""
    from deepstrata.families.recommend.serve import served

    if data is not None:
        raise ConfigError("--data: a recommendation run is inspected on its own interaction log; leave --data out")
    state = served(run)
    active = np.array([u for u, h in enumerate(state.histories) if len(h)], dtype=np.int64)
    if len(active) < 4:
        raise DataError(f"{run.path}: {len(active)} users with events; inspection needs at least 4")
    users = active[sample_rows(len(active), samples, seed)]
    histories = [state.histories[u] for u in users]
    inputs, mask = _model_inputs(run.model, histories, users)
    form = f"their last {inputs.shape[1]} items, left-padded" if mask is not None else "user ids"
    labels, classes = _terciles(np.array([len(h) for h in histories], dtype=np.float64), "events")
    description = (f"{state.log.source}: {len(users)} of {len(active)} users of the run's log ({form}), "
                   f"sampled with seed {seed}; coloured by history length")
    return InspectData(inputs=inputs, labels=labels, classes=classes, description=description,
                       pool_size=len(active), mask=mask, probe=False, label_name="history length",
                       notes=list(state.log.notes), extra={"state": state, "users": users})


def _item_names(state) -> list[str]:
    titles = state.log.titles
    return [titles.get(item) or f"item {item}" for item in state.log.item_ids]


@torch.inference_mode()
def item_views(result, model, control, sample: InspectData, *, seed: int = 0) -> None:
    """Neighbours of popular items (trained vs random init) and the item map, added to ``result``."""
    from deepstrata.inspect.projections import project, sample_index

    if not callable(getattr(model, "item_features", None)):
        return
    state = sample.extra["state"]
    names = _item_names(state)
    trained = model.item_features().float().cpu().numpy()
    random = control.item_features().float().cpu().numpy()
    popularity = state.popularity.numpy()
    queries = np.argsort(-popularity, kind="stable")[:QUERY_ITEMS].tolist()
    for label, vectors in (("trained", trained), ("random init", random)):
        columns = []
        for item in queries:
            order, scores = cosine_neighbours(vectors, item, NEIGHBOURS)
            columns.append([(names[i], f"cosine {s:.2f}; {int(popularity[i])} events")
                            for i, s in zip(order.tolist(), scores.tolist())])
        result.tables.append(NeighbourTable(
            section="items", title=f"Nearest items in the item space: {label}",
            query="the most popular items: " + "; ".join(f"{names[i]} ({int(popularity[i])} events)" for i in queries),
            columns=[names[i] for i in queries], rows=columns_to_rows(columns),
            note=("Cosine similarity in the learned item space (the vectors recommend and similar use)."
                  if label == "trained" else
                  "The same architecture at random initialisation: what the neighbours are before any learning."),
        ))
    index = sample_index(len(trained), ITEM_MAP_SAMPLE, seed)
    labels, classes = _terciles(popularity[index], "events")
    maps = {"trained": {}, "random init": {}}
    methods = result.settings["projection"]["methods"]
    for method in methods:
        maps["trained"][method] = project(trained[index], method, seed=seed)
        maps["random init"][method] = project(random[index], method, seed=seed)
    from deepstrata.inspect.report import projection_figure

    result.figures["items"] = projection_figure(maps, labels, classes, legend="popularity")
    result.captions["items"] = (f"{len(index)} of {len(trained)} items (seed {seed}), each a point of the learned "
                                "item space (left) and of the same space at random initialisation (right), "
                                "coloured by popularity tercile.")
