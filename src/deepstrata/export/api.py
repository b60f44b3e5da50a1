"""``export_run``: check the target, ask the family for its plan, convert, verify, and only then write.

The order is the promise: every refusal (a bad ``--format`` or ``--out``, a missing extra, a
file deepstrata did not write) comes before any work, and nothing reaches the disk until
the exported bytes have answered the run's own batches as PyTorch does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deepstrata import __version__
from deepstrata.export import files, formats
from deepstrata.export.files import Targets
from deepstrata.export.plan import ExportPlan
from deepstrata.export.verify import Verified, verify


@dataclass(frozen=True)
class Exported:
    """What an export wrote and how it was checked; ``line()`` is what ``deepstrata export`` prints."""

    format: str
    runtime: str
    targets: Targets
    size: int
    verified: Verified
    batch_source: str

    def line(self) -> str:
        beside = ", ".join(str(p) for p in self.targets.extras.values())
        sizes = " and ".join(map(str, self.verified.batch_sizes))
        return (f"{self.targets.model}: {self.format}, {self.size / 1e6:.2f} MB; contract {self.targets.contract}"
                + (f"; with {beside}" if beside else "")
                + f"\nverified with {self.runtime} on batches of {sizes} ({self.batch_source}): largest absolute "
                  f"difference {self.verified.difference:.2e} (tolerance {self.verified.limit:.0e})")


def export_run(run, format: str, out: str | Path | None = None, *, overwrite: bool = False) -> Exported:
    """Export ``run``'s model as ``format`` (``onnx`` or ``pt2``) to ``out`` (default ``RUN/export/model.<fmt>``)."""
    fmt = formats.get(format)
    fmt.check()
    where = files.targets(run.path, fmt.suffix, fmt.name, out)
    data = [run.config.data.source]
    files.check_writable([where.model, where.contract], where.contract, overwrite=overwrite, run_path=run.path,
                         data=data)
    plan: ExportPlan = run.family.export(run)
    where = where.with_extras({role: suffix for role, (suffix, _) in plan.files.items()})
    files.check_writable(list(where.extras.values()), where.contract, overwrite=overwrite, run_path=run.path,
                         data=data)
    model = fmt.convert(plan)
    verified = verify(plan, fmt.open(model, plan), f"export --format {fmt.name}")
    extras = {role: content for role, (_, content) in plan.files.items()}
    files.write(where, model, extras, contract(run, fmt, plan, where, model, extras, verified))
    return Exported(fmt.name, fmt.runtime, where, len(model), verified, plan.batch_source)


def contract(run, fmt: formats.Format, plan: ExportPlan, where: Targets, model: bytes, extras: dict[str, bytes],
             verified: Verified) -> dict:
    """The contract JSON: what the file is, what it takes and gives, the family's preprocessing, the check."""
    from deepstrata.embeddings import weights_fingerprint

    named = {"model": {"name": where.model.name, "sha256": files.sha256(model)}}
    named.update({role: {"name": where.extras[role].name, "sha256": files.sha256(content)}
                  for role, content in extras.items()})
    return {
        "written_by": files.WRITER,
        "deepstrata": __version__,
        "format": fmt.name,
        "runtime": fmt.runtime,
        **fmt.details(model),
        "run": str(Path(run.path).resolve()),
        "weights": weights_fingerprint(run.path),
        "task": run.task,
        "model": run.info["spec"]["family"],
        "files": named,
        "inputs": [spec.record() for spec in plan.inputs],
        "outputs": [spec.record() for spec in plan.outputs],
        "dynamic_dims": {dim.name: dim.record() for dim in plan.dims},
        **plan.contract,
        "verified": {"runtime": fmt.runtime, "batches": plan.batch_source, "batch_sizes": list(verified.batch_sizes),
                     "max_abs_difference": verified.difference, "tolerance": verified.limit,
                     "tolerance_kind": "relative to the largest score (at least 1)" if plan.relative else "absolute"},
    }
