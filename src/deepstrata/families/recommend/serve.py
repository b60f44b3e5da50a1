"""Serving a finished recommendation run: ``recommend``, ``similar`` and ``evaluate``.

Each reads the run's own log (``interactions.npz`` and ``vocab.json``) once per ``Run``
(``served``); a known user's history is all of their events in that log.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from deepstrata.data.interactions import InteractionLog, load_log
from deepstrata.errors import ConfigError, DataError, RunError
from deepstrata.families.recommend.config import LOG_FILE, VOCAB_FILE, split_events
from deepstrata.families.recommend.family import TASK
from deepstrata.families.recommend.tasks import metrics_only, model_scorer
from deepstrata.recsys_metrics import evaluate_scorer


@dataclasses.dataclass
class Served:
    """What serving needs from a run, read once per ``Run``."""

    log: InteractionLog
    user_index: dict[str, int]
    item_index: dict[str, int]
    histories: list[np.ndarray]
    popularity: torch.Tensor


def served(run) -> Served:
    """The run's log, indices and histories, read on first use and kept on the ``Run``."""
    state = getattr(run, "_recommend_state", None)
    if state is None:
        if run.task != TASK:
            run.family.refuse(run, "recommend and similar")
        log = load_log(run.path / LOG_FILE, run.path / VOCAB_FILE)
        spec = run.info["spec"]
        for key, count in (("num_items", log.num_items), ("num_users", log.num_users)):
            if isinstance(spec.get(key), int) and spec[key] != count:
                from deepstrata.runfiles import damaged

                raise damaged(run.path / VOCAB_FILE, f"{count} {key[4:]}, but the run's model was built for "
                                                     f"{spec[key]}")
        order = np.lexsort((np.arange(len(log)), log.times, log.users))
        bounds = np.searchsorted(log.users[order], np.arange(log.num_users + 1))
        items = log.items[order]
        state = Served(log, {u: i for i, u in enumerate(log.user_ids)}, {t: i for i, t in enumerate(log.item_ids)},
                       [items[bounds[u]:bounds[u + 1]] for u in range(log.num_users)],
                       torch.from_numpy(np.bincount(log.items, minlength=log.num_items).astype(np.float32)))
        run._recommend_state = state
    return state


def check_k(k: int) -> int:
    """``k`` if it is a positive integer (the number of items, or of update epochs)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"-k: got {k!r}, expected a positive integer")
    return k


def _entries(state: Served, scores: torch.Tensor, k: int) -> list[dict]:
    valid = int((scores > -torch.inf).sum())
    values, index = torch.topk(scores, min(k, valid))
    titles = state.log.titles
    return [{"item": state.log.item_ids[i], "score": round(float(v), 4),
             "title": titles.get(state.log.item_ids[i])} for v, i in zip(values.tolist(), index.tolist())]


def recommend_users(run, users: list, k: int = 10) -> list[dict]:
    """Top-``k`` unseen items for each user, scored in batches; unknown users get popular items.

    Each answer is ``{"user", "items": [{"item", "score", "title"}], "fallback"}``; the
    history a known user's scores come from is all of their events in the run's log.
    """
    k = check_k(k)
    state = served(run)
    model = run.model
    score = model_scorer(model, run.device)
    keys = [str(user) for user in users]
    known = [state.user_index.get(key) for key in keys]
    results: list[dict | None] = [None] * len(keys)
    rows = [r for r, u in enumerate(known) if u is None]
    for r in rows:
        results[r] = {"user": keys[r], "items": _entries(state, state.popularity.clone(), k), "fallback": True}
    todo = [r for r, u in enumerate(known) if u is not None]
    step = 256
    for start in range(0, len(todo), step):
        chunk = todo[start:start + step]
        ids = np.array([known[r] for r in chunk], dtype=np.int64)
        histories = [state.histories[u] for u in ids]
        with torch.inference_mode():
            scores = score(ids, histories)
        for row, r in enumerate(chunk):
            row_scores = scores[row].clone()
            row_scores[torch.from_numpy(histories[row])] = -torch.inf
            results[r] = {"user": keys[r], "items": _entries(state, row_scores, k), "fallback": False}
    return results


def recommend(run, user, k: int = 10) -> dict:
    """Top-``k`` items for one user (see ``recommend_users``)."""
    return recommend_users(run, [user], k)[0]


def similar(run, item, k: int = 10) -> dict:
    """The ``k`` nearest items to ``item`` by cosine in the learned item-embedding space."""
    k = check_k(k)
    state = served(run)
    key = str(item)
    if key not in state.item_index:
        examples = ", ".join(state.log.item_ids[:3])
        raise DataError(f"{run.path}: unknown item {key!r} "
                        f"(the run knows {state.log.num_items} items, e.g. {examples})")
    with torch.inference_mode():
        vectors = F.normalize(run.model.item_features().float().cpu(), dim=1)
    index = state.item_index[key]
    scores = vectors @ vectors[index]
    scores[index] = -torch.inf
    return {"item": key, "title": state.log.titles.get(key), "items": _entries(state, scores, k)}



def evaluate_recommender(run, data=None) -> dict:
    """Test metrics of a run's model on its own log, split as in training (full ranking).

    Another log cannot be scored against this run's ids without joining it first, which
    is what ``update`` does; asking for one is an error that says so.
    """
    state = served(run)
    if data is not None and str(data) not in (run.config.data.source, state.log.source):
        raise RunError(f"{data}: a recommendation run is evaluated on its own log ({run.config.data.source}); "
                       f"add new interactions with `deepstrata update {run.path} --data {data}`")
    split = split_events(state.log, run.config.recommend)
    result = evaluate_scorer(model_scorer(run.model, run.device), split.test, split.num_items)
    return {"data": state.log.source, "split": f"test split of the run ({split.method})",
            "examples": int(result["users"]), "metrics": metrics_only(result)}
