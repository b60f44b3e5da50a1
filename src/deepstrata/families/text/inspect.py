"""What a text model's blocks learned: attention maps, and the tokens nearest to a token per block.

The sample is the run's held-out texts (validation + test split of its own source, or
another source's test split), tokenized with the run's tokenizer. Two views only text has:

* attention maps (mean over heads) of a few short texts for every block, tokens on both
  axes: where each token looks;
* for one chosen token occurrence, the token occurrences nearest to it in each layer
  (cosine): in ``embed`` they are the same word elsewhere; deeper, words used alike.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from deepstrata.inspect.data import InspectData, held_out_description, sample_rows
from deepstrata.inspect.neighbours import NeighbourTable, columns_to_rows, cosine_neighbours
from deepstrata.inspect.taps import model_device, read_layers

ATTENTION_TEXTS = 3
ATTENTION_MAX_TOKENS = 24
NEIGHBOUR_TEXTS = 150
NEIGHBOURS = 8
_WORD = re.compile(r"^[^\W\d_]{5,}$")


def load_text_sample(run, data: str | None = None, *, samples: int = 2000, seed: int = 0) -> InspectData:
    """Up to ``samples`` held-out texts with labels, as padded ids ``[N, L]`` and their mask."""
    from deepstrata.data.text import load_text, split_text
    from deepstrata.data.tokenizer import pad_batch
    from deepstrata.errors import DataError
    from deepstrata.families.text.verbs import run_tokenizer

    cfg = run.config
    t = cfg.text
    source = data or cfg.data.source
    same = source == cfg.data.source
    dataset = load_text(source, format=t.format if same else None, text_column=t.text_column if same else None,
                        label_column=t.label_column if same else None, encoding=t.encoding)
    if same:
        splits = split_text(dataset, seed=cfg.train.seed, val_fraction=cfg.data.val_fraction,
                            test_fraction=cfg.data.test_fraction)
        texts, labels = splits.val_texts + splits.test_texts, np.concatenate([splits.val_y, splits.test_y])
        which = held_out_description(splits.test_is_official)
    elif dataset.test_texts is not None:
        texts, labels, which = dataset.test_texts, dataset.test_labels, "official test split"
    else:
        texts, labels, which = dataset.texts, dataset.labels, "all examples (this source has no test split)"
    if len(labels) < 4:
        raise DataError(f"{source}: {len(labels)} held-out texts; inspection needs at least 4")
    rows = sample_rows(len(labels), samples, seed)
    texts = [texts[i] for i in rows]
    tokenizer = run_tokenizer(run)
    encoded = tokenizer.encode(texts, with_offsets=True)
    ids = torch.from_numpy(pad_batch(encoded.ids, tokenizer.pad_id))
    description = (f"{dataset.source or source}: {len(rows)} of {len(labels)} texts of the {which}"
                   + (f", sampled with seed {seed}" if len(rows) < len(labels) else "")
                   + f"; at most {tokenizer.max_length} tokens each ({encoded.truncated} truncated)")
    return InspectData(inputs=ids, labels=np.asarray(labels)[rows], classes=list(dataset.classes),
                       description=description, pool_size=len(labels), mask=ids != tokenizer.pad_id, trim=True,
                       notes=list(dataset.notes), extra={"texts": texts, "encoded": encoded, "tokenizer": tokenizer})


def text_inputs(run, x) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded ids ``[N, L]`` and mask of texts: a list of strings, or a file (``.txt`` lines, a table's texts).

    A single ``str`` is a file name, never one text: a data source that is not found must
    not become a one-text answer (a missing ``news.csv`` once gave 1 feature row, not 400).
    """
    from pathlib import Path

    from deepstrata.data.tokenizer import pad_batch
    from deepstrata.errors import DataError
    from deepstrata.families.text.verbs import as_texts, read_input_texts, run_tokenizer

    if isinstance(x, (str, Path)):
        if not Path(x).exists():
            raise DataError(f"{x}: no such file or directory; features of a text run read a .txt (one text per "
                            "line), a table of texts or a folder of class sub-folders (in Python, texts themselves "
                            "go in a list)")
        texts = read_input_texts(x, run)
    else:
        texts = as_texts(x)
    tokenizer = run_tokenizer(run)
    ids = torch.from_numpy(pad_batch(tokenizer.encode(texts).ids, tokenizer.pad_id))
    return ids, ids != tokenizer.pad_id


def _display(token: str) -> str:
    stripped = token.strip()
    return stripped if stripped else "␣"


def _token_strings(sample: InspectData, index: int) -> list[str]:
    encoded, tokenizer = sample.extra["encoded"], sample.extra["tokenizer"]
    return tokenizer.token_strings(sample.extra["texts"][index], encoded.ids[index], encoded.offsets[index],
                                   encoded.special[index])


def attention_texts(sample: InspectData, count: int = ATTENTION_TEXTS) -> list[int]:
    """Short texts to draw attention for: one per class where possible, shortest first."""
    lengths = np.array([len(ids) for ids in sample.extra["encoded"].ids])
    order = np.argsort(lengths, kind="stable")
    short = [int(i) for i in order if 4 <= lengths[i] <= ATTENTION_MAX_TOKENS] or [int(i) for i in order[:count]]
    picked: list[int] = []
    for label in dict.fromkeys(int(sample.labels[i]) for i in short):
        picked.append(next(i for i in short if int(sample.labels[i]) == label))
        if len(picked) == count:
            break
    picked += [i for i in short if i not in picked][: count - len(picked)]
    return picked


@torch.inference_mode()
def attention_figure(model, sample: InspectData, indices: Sequence[int]):
    """Rows: texts; columns: blocks; each cell the head-averaged attention (query rows, key columns)."""
    from matplotlib.figure import Figure

    device = model_device(model)
    rows = []
    for index in indices:
        ids = sample.extra["encoded"].ids[index][:ATTENTION_MAX_TOKENS]
        maps = model.attention_maps(torch.from_numpy(ids).unsqueeze(0).to(device))
        tokens = [_display(t) for t in _token_strings(sample, index)[: len(ids)]]
        rows.append((tokens, {name: m[0].float().mean(0).cpu().numpy() for name, m in maps.items()}))
    blocks = list(rows[0][1]) if rows else []
    longest = max((len(tokens) for tokens, _ in rows), default=1)
    cell = max(3.2, 0.19 * longest + 1.2)
    fig = Figure(figsize=(cell * max(len(blocks), 1), cell * len(rows) + 0.4))
    for r, (tokens, maps) in enumerate(rows):
        for c, name in enumerate(blocks):
            ax = fig.add_subplot(len(rows), len(blocks), r * len(blocks) + c + 1)
            weights = maps[name]
            ax.imshow(weights, cmap="viridis", vmin=float(weights.min()), vmax=max(float(weights.max()), 1e-9))
            ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
            ax.set_yticks(range(len(tokens)), tokens, fontsize=7)
            if r == 0:
                ax.set_title(f"{name} (mean over heads)", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"text {r + 1}: query token", fontsize=8)
    fig.suptitle("self-attention: each row is a token, the colours where it attends", fontsize=10)
    fig.tight_layout()
    return fig


def choose_query(tokens: list[list[str]], special: list[np.ndarray], query: str | None) -> tuple[int, int] | None:
    """(text, position) of the token to find neighbours of: ``query`` if given, else a frequent word."""
    words = [(t, p, tok.strip()) for t, row in enumerate(tokens) for p, tok in enumerate(row) if not special[t][p]]
    if not words:
        return None
    if query is not None:
        for t, p, word in words:
            if word.lower() == query.strip().lower():
                return t, p
    counts = Counter(word.lower() for _, _, word in words if _WORD.match(word))
    target = counts.most_common(1)[0][0] if counts else words[0][2].lower()
    return next((t, p) for t, p, word in words if word.lower() == target)


@torch.inference_mode()
def nearest_tokens(model, sample: InspectData, layers: Sequence[str], query: str | None = None,
                   texts: int = NEIGHBOUR_TEXTS, k: int = NEIGHBOURS) -> NeighbourTable | None:
    """The ``k`` token occurrences nearest to one occurrence of a chosen token, per token-level layer."""
    count = min(texts, len(sample))
    ids = sample.inputs[:count]
    mask = sample.mask[:count]
    length = int(mask.any(0).nonzero().max()) + 1
    device = model_device(model)
    outputs = read_layers(model, (ids[:, :length].to(device),), list(layers))
    token_layers = [name for name in layers if outputs[name].dim() == 3]
    if not token_layers:
        return None
    tokens = [_token_strings(sample, i) for i in range(count)]
    special = [sample.extra["encoded"].special[i] for i in range(count)]
    found = choose_query(tokens, special, query)
    if found is None:
        return None
    where = [(t, p) for t in range(count) for p in range(len(tokens[t])) if not special[t][p]]
    position = {tp: i for i, tp in enumerate(where)}
    text_index = torch.tensor([t for t, _ in where])
    token_index = torch.tensor([p for _, p in where])

    def context(t: int, p: int) -> str:
        left = "".join(tokens[t][max(0, p - 3):p]).strip()
        right = "".join(tokens[t][p + 1:p + 4]).rstrip()
        return f"…{left} [{tokens[t][p].strip()}]{right}…"

    columns = []
    for name in token_layers:
        vectors = outputs[name][text_index, token_index].float().cpu().numpy()
        order, scores = cosine_neighbours(vectors, position[found], k)
        columns.append([(f"{_display(tokens[where[i][0]][where[i][1]])}  ({s:.2f})", context(*where[i]))
                        for i, s in zip(order.tolist(), scores.tolist())])
    return NeighbourTable(
        section="text", title="Tokens nearest to a chosen token, per layer",
        query=f"“{tokens[found[0]][found[1]].strip()}” in {context(*found)} (text {found[0] + 1} of the sample)",
        columns=token_layers, rows=columns_to_rows(columns),
        note=f"Cosine similarity between the features of every token occurrence in the first {count} texts of "
             "the sample (special tokens left out). The query is the most frequent word of at least five letters "
             "unless one is chosen (inspect_run(..., token=\"word\")).",
    )


def text_views(result, model, sample: InspectData, names: Sequence[str], *, token: str | None = None) -> None:
    """Attention maps (if the model exposes them) and nearest tokens, added to ``result``."""
    if callable(getattr(model, "attention_maps", None)):
        indices = attention_texts(sample)
        if indices:
            result.figures["attention"] = attention_figure(model, sample, indices)
            result.captions["attention"] = (
                f"{len(indices)} short held-out texts (at most {ATTENTION_MAX_TOKENS} tokens shown), one per class "
                "where possible; attention weights averaged over heads, each map coloured from its smallest "
                "(dark) to its largest (yellow) weight; padding is never attended to.")
    table = nearest_tokens(model, sample, [n for n in names if n != "head"], query=token)
    if table is not None:
        result.tables.append(table)
