"""Latency of an exported model: the digits CNN in onnxruntime vs eager PyTorch, batch 1 and 64, on the CPU.

A quick fit on digits (the default CNN, width 32, seed 0) is exported with ``deepstrata
export --format onnx``; both engines then run the exported wrapper's computation — float
pixels in [0, 1] to class probabilities — on real held-out digits images: eager PyTorch
(``torch.inference_mode``, ``torch.set_num_threads(T)``) and onnxruntime (CPU provider,
``intra_op_num_threads=T``, ``inter_op_num_threads=1``), for each thread count T. The calls
of the two engines alternate in rounds so that a busy machine slows both alike; warm-up
calls are excluded; each figure is the median of every timed call (p10 and p90 beside it).

    python benchmarks/export_latency.py [--threads 1,2] [--calls 400] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from results_io import result_path, write_results

BATCHES = (1, 64)


def fit_digits(out: Path, epochs: int) -> Path:
    from deepstrata.cli import main

    status = main(["fit", "--data", "digits", "--epochs", str(epochs), "--device", "cpu", "--seed", "0", "--quiet",
                   "--no-baselines", "--out", str(out)])
    assert status == 0, status
    return out


def _accuracy(run) -> float:
    rows = run.comparison()["rows"]
    return rows[0]["metrics"].get("accuracy") if rows and "metrics" in rows[0] else None


def timed(call, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def summary(times: list[float]) -> dict:
    ms = np.array(times) * 1e3
    return {"median_ms": round(float(np.median(ms)), 4), "p10_ms": round(float(np.percentile(ms, 10)), 4),
            "p90_ms": round(float(np.percentile(ms, 90)), 4), "calls": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="thread counts, both engines capped alike (default 1,2)")
    parser.add_argument("--calls", type=int, default=400, help="timed calls per engine, batch and round (batch 1)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of the two engines")
    parser.add_argument("--warmup", type=int, default=30, help="untimed calls before each engine's first round")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the quick digits fit")
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args()

    from deepstrata.export.formats import onnx_runner
    from deepstrata.run import load

    with tempfile.TemporaryDirectory() as tmp:
        run = load(fit_digits(Path(tmp) / "run", args.epochs))
        exported = run.export("onnx")
        print(exported.line())
        data = exported.targets.model.read_bytes()
        plan = run.family.export(run)
        wrapper = plan.module
        images = run.family.inspect_sample(run, None, samples=64, seed=0, data_dir=None).inputs.contiguous()
        contract = json.loads(exported.targets.contract.read_text())
        model_info = {"spec": run.info["spec"], "params": run.info.get("params"), "onnx_bytes": len(data),
                      "opset": contract["opset"], "test_accuracy": _accuracy(run),
                      "export_check": {"max_abs_difference": exported.verified.difference,
                                       "tolerance": exported.verified.limit}}
        rows = []
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            ort_run = onnx_runner(data, plan, threads=threads)
            for batch in BATCHES:
                x = images[:batch]
                calls = max(20, args.calls // (1 if batch == 1 else 8))
                with torch.inference_mode():
                    diff = float(np.abs(wrapper(x).numpy() - ort_run((x,))).max())

                    def eager():
                        wrapper(x)

                    def onnx():
                        ort_run((x,))

                    timed(eager, args.warmup)
                    timed(onnx, args.warmup)
                    times = {"pytorch": [], "onnxruntime": []}
                    for _ in range(args.rounds):
                        times["pytorch"] += timed(eager, calls)
                        times["onnxruntime"] += timed(onnx, calls)
                row = {"threads": threads, "batch": batch, "max_abs_difference": diff,
                       "pytorch": summary(times["pytorch"]), "onnxruntime": summary(times["onnxruntime"])}
                row["speedup"] = round(row["pytorch"]["median_ms"] / row["onnxruntime"]["median_ms"], 2)
                rows.append(row)
                print(f"threads {threads}  batch {batch:>2}:  pytorch {row['pytorch']['median_ms']:.3f} ms  "
                      f"onnxruntime {row['onnxruntime']['median_ms']:.3f} ms  ({row['speedup']:.2f}x)  "
                      f"max diff {diff:.1e}")
    import onnxruntime

    path = args.results or result_path("export_latency", 0)
    write_results(path, {"model": model_info, "rows": rows}, 0, onnxruntime=onnxruntime.__version__,
                  method="median of every timed call (rounds alternate the engines; warm-up excluded); inputs "
                         "are held-out digits images as float [0, 1]; output probabilities")


if __name__ == "__main__":
    main()
