"""Recommendation models that learn user and item features from behaviour alone.

Two families, with named parts like every other family:

- ``MatrixFactorization`` (``mf``): ``user_embedding``, ``item_embedding``, ``head``
  (item bias plus the dot product), trained with BPR (Rendle et al. 2009) on sampled
  negatives.
- ``SASRec`` (``sasrec``): ``item_embedding``, ``position_embedding``, ``block1`` …
  ``blockK`` (pre-norm causal self-attention), ``head`` (final norm; scores are dot
  products with the tied item embeddings). Trained with full softmax cross-entropy
  over the catalogue ("SASRec+": Klenitskiy & Vasilev, RecSys 2023), or with sampled
  negatives for catalogues too large to score at every step.

Both take the same call for scoring, ``user_scores(users, sequences) -> [B, num_items]``:
MF reads the user index, SASRec the left-padded history (0 = padding, item ``i`` at
``i + 1``). Both can ``grow`` their tables for new users and items; old ids keep rows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from deepstrata.errors import ConfigError


class RecModel(nn.Module):
    """The shared feature API: ``layer_names``, ``forward_intermediates``, ``forward_features``.

    Subclasses also give ``item_features()`` (the learned item vectors, for ``similar``),
    ``user_scores`` and ``grow``.
    """

    parts: tuple[str, ...]
    feature_dim: int
    spec: dict

    @property
    def layer_names(self) -> list[str]:
        return list(self.parts)

    def check_layers(self, names) -> None:
        unknown = [name for name in names if name not in self.parts]
        if unknown:
            raise ConfigError(
                f"unknown layer {', '.join(map(repr, unknown))}; this model has: {', '.join(self.parts)}"
            )


def _grow_embedding(old: nn.Embedding, rows: int, std: float) -> nn.Embedding:
    if rows < old.num_embeddings:
        raise ConfigError(f"cannot shrink an embedding table from {old.num_embeddings} to {rows} rows")
    new = nn.Embedding(rows, old.embedding_dim, padding_idx=old.padding_idx).to(old.weight.device)
    with torch.no_grad():
        nn.init.normal_(new.weight, std=std)
        new.weight[: old.num_embeddings] = old.weight
    return new


class MFHead(nn.Module):
    """Scores: ``user · item + item_bias``."""

    def __init__(self, num_items: int) -> None:
        super().__init__()
        self.item_bias = nn.Parameter(torch.zeros(num_items))

    def forward(self, user_vectors: torch.Tensor, item_vectors: torch.Tensor) -> torch.Tensor:
        return user_vectors @ item_vectors.T + self.item_bias


class MatrixFactorization(RecModel):
    """One vector per user and per item; a score is their dot product plus an item bias."""

    parts = ("user_embedding", "item_embedding", "head")

    def __init__(self, num_users: int, num_items: int, *, dim: int = 64) -> None:
        super().__init__()
        self.init_std = 0.1
        self.user_embedding = nn.Embedding(num_users, dim)
        self.item_embedding = nn.Embedding(num_items, dim)
        nn.init.normal_(self.user_embedding.weight, std=self.init_std)
        nn.init.normal_(self.item_embedding.weight, std=self.init_std)
        self.head = MFHead(num_items)
        self.feature_dim = dim
        self.spec = {"family": "mf", "num_users": num_users, "num_items": num_items, "dim": dim}

    @property
    def num_items(self) -> int:
        return self.item_embedding.num_embeddings

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item for each user: [B] -> [B, num_items]."""
        return self.head(self.user_embedding(users), self.item_embedding.weight)

    def user_scores(self, users: torch.Tensor, sequences: torch.Tensor | None = None) -> torch.Tensor:
        return self(users)

    def forward_features(self, users: torch.Tensor) -> torch.Tensor:
        """The learned user vectors [B, dim]."""
        return self.user_embedding(users)

    def forward_intermediates(self, users: torch.Tensor, layers=None) -> dict[str, torch.Tensor]:
        wanted = list(layers) if layers is not None else self.layer_names
        self.check_layers(wanted)
        out = {"user_embedding": self.user_embedding(users), "item_embedding": self.item_embedding.weight}
        if "head" in wanted:
            out["head"] = self.head(out["user_embedding"], out["item_embedding"])
        return {name: out[name] for name in wanted}

    def item_features(self) -> torch.Tensor:
        return self.item_embedding.weight

    def bpr_loss(self, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                 reg: float = 0.0) -> torch.Tensor:
        """-log σ(s(u, i) - s(u, j)), plus L2 on the vectors in the batch (classic BPR)."""
        u = self.user_embedding(users)
        i = self.item_embedding(positives)
        j = self.item_embedding(negatives)
        bias = self.head.item_bias
        diff = (u * (i - j)).sum(-1) + bias[positives] - bias[negatives]
        loss = -F.logsigmoid(diff).mean()
        if reg:
            loss = loss + reg * (u.pow(2).sum() + i.pow(2).sum() + j.pow(2).sum()) / len(users)
        return loss

    def grow(self, num_users: int, num_items: int) -> None:
        """Add rows for new users and items; existing rows are kept as they are."""
        self.user_embedding = _grow_embedding(self.user_embedding, num_users, self.init_std)
        self.item_embedding = _grow_embedding(self.item_embedding, num_items, self.init_std)
        old = self.head.item_bias.data
        bias = torch.zeros(num_items, device=old.device)
        bias[: len(old)] = old
        self.head.item_bias = nn.Parameter(bias)
        self.spec = {**self.spec, "num_users": num_users, "num_items": num_items}


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention under a causal mask (no dropout on the attention weights:
    on a CPU, drawing an [B, heads, L, L] mask costs more than the attention itself)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class Block(nn.Module):
    """Pre-norm Transformer block: causal self-attention, then a position-wise MLP."""

    def __init__(self, dim: int, heads: int, dropout: float, mlp_ratio: int = 2) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_ratio * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), mask))
        return x + self.drop(self.mlp(self.norm2(x)))


class SASRec(RecModel):
    """A causal Transformer over a user's item sequence; the last state is the user's features."""

    def __init__(self, num_items: int, *, dim: int = 64, blocks: int = 2, heads: int = 2, max_len: int = 200,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.parts = ("item_embedding", "position_embedding", *(f"block{i + 1}" for i in range(blocks)), "head")
        self.max_len = max_len
        self.item_embedding = nn.Embedding(num_items + 1, dim, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, dim)
        nn.init.normal_(self.item_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        self.embed_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleDict({f"block{i + 1}": Block(dim, heads, dropout) for i in range(blocks)})
        self.head = nn.LayerNorm(dim)
        self.feature_dim = dim
        self.spec = {"family": "sasrec", "num_items": num_items, "dim": dim, "blocks": blocks, "heads": heads,
                     "max_len": max_len, "dropout": dropout}

    @property
    def num_items(self) -> int:
        return self.item_embedding.num_embeddings - 1

    def _mask(self, sequences: torch.Tensor) -> torch.Tensor:
        """[B, 1, L, L]: a position sees earlier non-padding positions and itself (never later ones)."""
        length = sequences.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=sequences.device).tril()
        real = (sequences != 0)[:, None, None, :]
        eye = torch.eye(length, dtype=torch.bool, device=sequences.device)
        return causal & (real | eye)

    def _embed(self, sequences: torch.Tensor) -> torch.Tensor:
        length = sequences.shape[1]
        if length > self.max_len:
            raise ConfigError(f"sequence length {length} exceeds the model's max_len {self.max_len}")
        positions = torch.arange(self.max_len - length, self.max_len, device=sequences.device)
        x = self.item_embedding(sequences) * math.sqrt(self.feature_dim) + self.position_embedding(positions)
        return self.embed_dropout(x * (sequences != 0).unsqueeze(-1))

    def hidden(self, sequences: torch.Tensor) -> torch.Tensor:
        """Normalised states [B, L, dim] for left-padded sequences [B, L] of item ids + 1."""
        x = self._embed(sequences)
        mask = self._mask(sequences)
        for block in self.blocks.values():
            x = block(x, mask)
        return self.head(x)

    def item_weights(self) -> torch.Tensor:
        """Output item vectors [num_items, dim] (tied with the input embedding, padding row left out)."""
        return self.item_embedding.weight[1:]

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        """Scores of every item as the next one after each sequence: [B, L] -> [B, num_items]."""
        return self.forward_features(sequences) @ self.item_weights().T

    def user_scores(self, users: torch.Tensor | None, sequences: torch.Tensor) -> torch.Tensor:
        return self(sequences)

    def forward_features(self, sequences: torch.Tensor) -> torch.Tensor:
        """The user's learned features: the final state at the last position [B, dim]."""
        return self.hidden(sequences)[:, -1]

    def forward_intermediates(self, sequences: torch.Tensor, layers=None) -> dict[str, torch.Tensor]:
        """Named outputs; block and head outputs are [B, L, dim] states, ``item_embedding`` the inputs."""
        wanted = list(layers) if layers is not None else self.layer_names
        self.check_layers(wanted)
        out: dict[str, torch.Tensor] = {}
        if "item_embedding" in wanted:
            out["item_embedding"] = self.item_embedding(sequences)
        if "position_embedding" in wanted:
            out["position_embedding"] = self.position_embedding.weight[-sequences.shape[1]:]
        x = self._embed(sequences)
        mask = self._mask(sequences)
        for name, block in self.blocks.items():
            x = block(x, mask)
            if name in wanted:
                out[name] = x
        if "head" in wanted:
            out["head"] = self.head(x)
        return {name: out[name] for name in wanted}

    def item_features(self) -> torch.Tensor:
        return self.item_weights()

    def grow(self, num_users: int, num_items: int) -> None:
        """Add rows for new items (users are their sequences, so need no table)."""
        self.item_embedding = _grow_embedding(self.item_embedding, num_items + 1, 0.02)
        self.spec = {**self.spec, "num_items": num_items}


def build_mf(spec: dict) -> MatrixFactorization:
    return MatrixFactorization(spec["num_users"], spec["num_items"], dim=spec["dim"])


def build_sasrec(spec: dict) -> SASRec:
    return SASRec(spec["num_items"], dim=spec["dim"], blocks=spec["blocks"], heads=spec["heads"],
                  max_len=spec["max_len"], dropout=spec["dropout"])
