"""The two export formats: a plan's wrapper turned into bytes, and those bytes opened again to run them.

* ``onnx``: torch's current exporter (``torch.onnx.export(..., dynamo=True)``, which traces
  with ``torch.export`` and translates with ``onnxscript``), weights inside the one file;
  run by onnxruntime. Needs the ``[export]`` extra.
* ``pt2``: ``torch.export.export`` + ``torch.export.save``; run by ``torch.export.load``.
  TorchScript is deprecated in this torch and is not used.

Both are made in memory, so that the verifier runs the very bytes that will be written and
a failed check leaves nothing on disk.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from deepstrata.errors import ConfigError, RunError
from deepstrata.export.plan import ExportPlan

EXTRA = "pip install 'deepstrata[export]' (onnx, onnxscript, onnxruntime)"


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    runtime: str                                   # what the verifier runs the export with
    convert: Callable[[ExportPlan], bytes]
    open: Callable[[bytes, ExportPlan], Callable]  # -> run(batch) -> the first output as a numpy array
    check: Callable[[], None]                      # raise ConfigError if the format's packages are missing
    details: Callable[[bytes], dict]               # format facts for the contract (the ONNX opset)


@contextlib.contextmanager
def _quiet():
    """The exporters' chatter (skipped torchvision ops, deprecations inside onnxscript) kept off the CLI's output."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _traced(what: str, err: Exception) -> RunError:
    first = (str(err).strip().splitlines() or ["-"])[0]
    return RunError(f"export {what}: the exporter could not trace this model ({type(err).__name__}: {first[:300]})")


def check_onnx() -> None:
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"--format onnx needs {', '.join(missing)}: {EXTRA}")


def onnx_bytes(plan: ExportPlan) -> bytes:
    """The wrapper as one ONNX file (weights inside), with the plan's input/output names and dynamic dimensions."""
    check_onnx()
    example = plan.batches[0]
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(plan.module, example, None, dynamo=True, verbose=False,
                                        dynamic_shapes=plan.dynamic_shapes(torch.export.Dim),
                                        input_names=[s.name for s in plan.inputs],
                                        output_names=[s.name for s in plan.outputs])
    except Exception as err:  # torch.export / onnxscript failures: one line naming the cause
        raise _traced("--format onnx", err) from None
    return program.model_proto.SerializeToString()


def onnx_runner(data: bytes, plan: ExportPlan, threads: int | None = None) -> Callable:
    """Run ONNX bytes with onnxruntime on the CPU: ``run(batch) -> numpy`` (the first output)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    expected = [s.name for s in plan.inputs]
    if names != expected:
        raise RunError(f"export --format onnx: the graph takes inputs {names}, but the contract says {expected}")

    def run(batch: tuple[torch.Tensor, ...]) -> np.ndarray:
        return session.run(None, {n: t.numpy() for n, t in zip(names, batch)})[0]

    return run


def pt2_bytes(plan: ExportPlan) -> bytes:
    """The wrapper as a ``torch.export`` program (``torch.export.save``), with the plan's dynamic dimensions."""
    try:
        with _quiet(), torch.no_grad():
            program = torch.export.export(plan.module, plan.batches[0],
                                          dynamic_shapes=plan.dynamic_shapes(torch.export.Dim))
    except Exception as err:
        raise _traced("--format pt2", err) from None
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def pt2_runner(data: bytes, plan: ExportPlan) -> Callable:
    """Load pt2 bytes with ``torch.export.load``: ``run(batch) -> numpy`` (the first output)."""
    module = torch.export.load(io.BytesIO(data)).module()

    def run(batch: tuple[torch.Tensor, ...]) -> np.ndarray:
        with torch.no_grad():
            out = module(*batch)
        return (out[0] if isinstance(out, (tuple, list)) else out).numpy()

    return run


def onnx_details(data: bytes) -> dict:
    import onnx

    proto = onnx.load_model_from_string(data)
    return {"opset": next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)}


def pt2_details(data: bytes) -> dict:
    return {"torch": torch.__version__.split("+")[0]}


FORMATS = {
    "onnx": Format("onnx", ".onnx", "onnxruntime", onnx_bytes, onnx_runner, check_onnx, onnx_details),
    "pt2": Format("pt2", ".pt2", "torch.export.load", pt2_bytes, pt2_runner, lambda: None, pt2_details),
}


def get(name: str) -> Format:
    if name not in FORMATS:
        raise ConfigError(f"--format: got {name!r}, expected one of {', '.join(FORMATS)}")
    return FORMATS[name]
