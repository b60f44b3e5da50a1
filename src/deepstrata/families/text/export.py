"""A text run's export plan: token ids and their mask in, class probabilities out, as ``run.predict`` computes.

``predict`` tokenizes with the run's own tokenizer (``[CLS]`` first, at most ``max_length``
tokens), right-pads a batch with id 0 to its longest text, runs the encoder and head (the
model masks padding itself) and reports the softmax. The tokenizer is not a tensor program,
so it travels beside the model as its own JSON (Hugging Face ``tokenizers`` format, which
every runtime with a tokenizers binding reads); everything after it is in the wrapper. The
mask is an input, as consumers of exported BERT models expect: a position it marks 0 is
read as padding, whatever its id, so ids and mask cannot disagree inside the model.
"""

from __future__ import annotations

import torch
from torch import nn

from deepstrata.data.tokenizer import pad_batch
from deepstrata.export.plan import Dim, ExportPlan, TensorSpec

BATCH_SIZES = (8, 3)
TOKENIZER_SUFFIX = ".tokenizer.json"


class TextProbabilities(nn.Module):
    """``input_ids [N, L]`` and ``attention_mask [N, L]`` (int64) -> ``probabilities [N, classes]``."""

    def __init__(self, model: nn.Module, pad_id: int) -> None:
        super().__init__()
        self.model, self.pad_id = model, pad_id

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        ids = torch.where(attention_mask != 0, input_ids, torch.full_like(input_ids, self.pad_id))
        return torch.softmax(self.model(ids).float(), dim=1)


def export_plan(run) -> ExportPlan:
    from deepstrata.families.text.verbs import run_tokenizer

    tokenizer = run_tokenizer(run)
    info = run.info["text"]
    model = run.load_model().eval()
    wrapper = TextProbabilities(model, tokenizer.pad_id).eval()
    sample = run.family.inspect_sample(run, None, samples=sum(BATCH_SIZES), seed=0, data_dir=None)
    ids = sample.extra["encoded"].ids
    if len(ids) < 4:
        from deepstrata.errors import DataError

        raise DataError(f"{run.config.data.source}: {len(ids)} held-out texts; export verifies on at least 4")
    cut = min(BATCH_SIZES[0], len(ids) - 2)
    batches = [_batch(ids[:cut], tokenizer.pad_id), _batch(ids[cut:], tokenizer.pad_id)]
    positions = _positions(model, tokenizer.max_length)
    return ExportPlan(
        module=wrapper,
        inputs=[TensorSpec("input_ids", "int64", ("batch", "length"),
                           "token ids of the run's tokenizer, [CLS] first, right-padded with pad_id"),
                TensorSpec("attention_mask", "int64", ("batch", "length"), "1 at real tokens, 0 at padding")],
        outputs=[TensorSpec("probabilities", "float32", ("batch", len(run.classes)),
                            "softmax over the classes, in the order of 'classes'")],
        dims=[Dim("batch"), Dim("length", 1, positions)],
        batches=batches,
        batch_source=f"{len(ids)} held-out texts of {run.config.data.source}, each batch padded to its longest",
        contract={
            "text": {
                "tokenizer": {"file": "the 'tokenizer' entry of 'files'", "format": "Hugging Face tokenizers JSON",
                              "kind": info.get("tokenizer_kind", "bpe")},
                "max_length": tokenizer.max_length,
                "truncation": tokenizer.truncate,
                "pad_id": tokenizer.pad_id,
                "first_token": "[CLS] (added by the tokenizer's post-processor)",
                "input_names": {"token_ids": "input_ids", "attention_mask": "attention_mask"},
                "padding": "right-pad each batch to its longest text with pad_id; the mask is 0 there",
                "encoding": info.get("encoding") or "utf-8",
            },
            "classes": run.classes,
        },
        files={"tokenizer": (TOKENIZER_SUFFIX, tokenizer.tokenizer.to_str().encode("utf-8"))},
    )


def _batch(ids: list, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    padded = torch.from_numpy(pad_batch(ids, pad_id))
    lengths = torch.tensor([len(i) for i in ids])
    mask = (torch.arange(padded.shape[1])[None, :] < lengths[:, None]).to(torch.int64)
    return padded, mask


def _positions(model: nn.Module, max_length: int) -> int:
    """The longest sequence the exported graph accepts: the tokenizer's limit, or the model's position table
    if that is shorter."""
    embed = model.layers["embed"]
    table = getattr(embed, "positions", None) or getattr(embed, "position_embeddings", None)
    return min(int(max_length), int(table.num_embeddings)) if isinstance(table, nn.Embedding) else int(max_length)
