"""A small pre-norm Transformer encoder that classifies token ids and yields a vector per token.

Layers, named like the CNN's stages so inspection and transfer address them the same way:

* ``embed``: token embedding (plus learned positions, unless positions are rotary);
* ``block1`` … ``blockN``: pre-norm blocks, ``x + attn(norm(x))`` then ``x + mlp(norm(x))``;
  attention goes through ``scaled_dot_product_attention`` with a padding mask, so padded
  positions are never attended to and adding padding never changes a text's outputs;
* ``head``: final LayerNorm, pooling over the text's tokens (mean, or the ``[CLS]``
  token), dropout and one linear map to the classes.

Input is ``ids [B, L]`` (int64, padded with ``pad_id``; the first token is ``[CLS]``).
``forward_tokens`` returns the per-token features the model generated (``[B, L, D]`` and
the mask), ``attention_maps`` the attention weights of every block (``[B, H, L, L]``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from deepstrata.models.base import NamedLayerModel


def rotary_tables(length: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of RoPE (Su et al. 2021) for positions ``0..length-1``: each ``[length, head_dim]``."""
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate query/key features ``[B, H, L, Dh]`` by their position (rotate-half form)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    length = x.shape[-2]
    return x * cos[:length].to(x.dtype) + rotated * sin[:length].to(x.dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the non-padding tokens of each text."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
                return_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        keep = mask[:, None, None, :]
        weights = None
        if return_weights:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
            weights = scores.masked_fill(~keep, float("-inf")).softmax(dim=-1)
            out = weights @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep,
                                                 dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim)), weights


class Block(nn.Module):
    """Pre-norm Transformer block: attention then a GELU MLP, each added to the residual stream."""

    def __init__(self, dim: int, heads: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Linear(ff_mult * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, rotary=None, return_weights: bool = False):
        attended, weights = self.attn(self.norm1(x), mask, rotary, return_weights)
        x = x + self.drop(attended)
        x = x + self.drop(self.mlp(self.norm2(x)))
        return (x, weights) if return_weights else x


class TokenEmbedding(nn.Module):
    """Token vectors plus learned absolute positions (none when positions are rotary)."""

    def __init__(self, vocab_size: int, dim: int, max_length: int, learned_positions: bool, dropout: float,
                 pad_id: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.positions = nn.Embedding(max_length, dim) if learned_positions else None
        self.drop = nn.Dropout(dropout)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tokens(ids)
        if self.positions is not None:
            x = x + self.positions(torch.arange(ids.shape[1], device=ids.device))
        return self.drop(x)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x [B, L, D]`` over the positions where ``mask [B, L]`` is true: ``[B, D]``."""
    weights = mask.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class TextHead(nn.Module):
    """Final norm, pooling over a text's tokens, dropout, linear classifier."""

    def __init__(self, dim: int, num_classes: int, pooling: str, dropout: float, norm: bool = True) -> None:
        super().__init__()
        self.pooling = pooling
        self.norm = nn.LayerNorm(dim) if norm else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, num_classes)

    def pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return x[:, 0] if self.pooling == "cls" else masked_mean(x, mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.pool(x, mask)))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from already pooled features ``[B, D]`` (used when the encoder is frozen)."""
        return self.fc(self.drop(features))


class TextEncoderModel(NamedLayerModel):
    """What every text family shares: ``embed``, ``block1..N`` and ``head`` over padded ids."""

    pad_id: int = 0

    def padding_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """True at real tokens, false at padding: ``[B, L]`` bool."""
        return ids != self.pad_id

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.layers["embed"](ids)

    def _block(self, name: str, x: torch.Tensor, mask: torch.Tensor, return_weights: bool = False):
        return self.layers[name](x, mask, return_weights=return_weights)

    @property
    def block_names(self) -> list[str]:
        return [name for name in self.layer_names if name.startswith("block")]

    def _encode(self, ids: torch.Tensor, upto: str | None = None, keep: tuple[str, ...] = ()):
        mask = self.padding_mask(ids)
        x = self._embed(ids)
        out = {"embed": x} if "embed" in keep else {}
        if upto == "embed":
            return x, mask, out
        for name in self.block_names:
            x = self._block(name, x, mask)
            if name in keep:
                out[name] = x
            if name == upto:
                break
        return x, mask, out

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x, mask, _ = self._encode(ids)
        return self.layers["head"](x, mask)

    def forward_intermediates(self, ids: torch.Tensor, layers: list[str] | tuple[str, ...] | None = None
                              ) -> dict[str, torch.Tensor]:
        """Per-token states ``[B, L, D]`` of ``embed``/``blockK`` and logits ``[B, C]`` of ``head``."""
        wanted = list(layers) if layers is not None else self.layer_names
        self.check_layers(wanted)
        last = max(wanted, key=self.layer_names.index)
        x, mask, out = self._encode(ids, upto=None if last == "head" else last, keep=tuple(wanted))
        if "head" in wanted:
            out["head"] = self.layers["head"](x, mask)
        return out

    def forward_tokens(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The features generated for every token (after the last block and its norm) and the mask."""
        x, mask, _ = self._encode(ids)
        return self.layers["head"].norm(x), mask

    def forward_features(self, ids: torch.Tensor) -> torch.Tensor:
        """The pooled vector the head classifies: ``[B, feature_dim]``."""
        x, mask, _ = self._encode(ids)
        return self.layers["head"].pool(x, mask)

    def attention_maps(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Attention weights of each block, ``[B, heads, L, L]``; rows of padding queries are kept, keys masked."""
        mask = self.padding_mask(ids)
        x = self._embed(ids)
        maps: dict[str, torch.Tensor] = {}
        for name in self.block_names:
            x, maps[name] = self._block(name, x, mask, return_weights=True)
        return maps

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [p for name, layer in self.layers.items() if name != "head" for p in layer.parameters()]


class TransformerClassifier(TextEncoderModel):
    """Pre-norm Transformer over byte-level BPE ids; ``spec`` rebuilds it (see ``from_spec``)."""

    def __init__(self, vocab_size: int, num_classes: int, *, dim: int = 128, layers: int = 2, heads: int = 4,
                 ff_mult: int = 4, max_length: int = 256, positions: str = "learned", pooling: str = "mean",
                 dropout: float = 0.1, pad_id: int = 0) -> None:
        super().__init__()
        if positions not in ("learned", "rotary"):
            raise ValueError(f"positions: expected learned or rotary, got {positions!r}")
        self.pad_id = pad_id
        named: dict[str, nn.Module] = {
            "embed": TokenEmbedding(vocab_size, dim, max_length, positions == "learned", dropout, pad_id)
        }
        for index in range(1, layers + 1):
            named[f"block{index}"] = Block(dim, heads, ff_mult, dropout)
        named["head"] = TextHead(dim, num_classes, pooling, dropout)
        self.layers = nn.ModuleDict(named)
        self.feature_dim = dim
        if positions == "rotary":
            cos, sin = rotary_tables(max_length, dim // heads)
            self.register_buffer("rotary_cos", cos, persistent=False)
            self.register_buffer("rotary_sin", sin, persistent=False)
        self.rotary = positions == "rotary"
        self.spec = {
            "family": "transformer", "vocab_size": vocab_size, "num_classes": num_classes, "dim": dim,
            "layers": layers, "heads": heads, "ff_mult": ff_mult, "max_length": max_length,
            "positions": positions, "pooling": pooling, "dropout": dropout, "pad_id": pad_id,
        }
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    @classmethod
    def from_spec(cls, spec: dict) -> "TransformerClassifier":
        keys = ("dim", "layers", "heads", "ff_mult", "max_length", "positions", "pooling", "dropout", "pad_id")
        return cls(spec["vocab_size"], spec["num_classes"], **{k: spec[k] for k in keys})

    def _block(self, name: str, x: torch.Tensor, mask: torch.Tensor, return_weights: bool = False):
        rotary = (self.rotary_cos, self.rotary_sin) if self.rotary else None
        return self.layers[name](x, mask, rotary, return_weights)
