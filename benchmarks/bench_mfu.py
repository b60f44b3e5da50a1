"""Model FLOP utilisation of ``deepstrata bench`` rows against each peak a GPU has, counted on the CPU.

``deepstrata bench`` divides the achieved FLOP/s by one peak: the bf16 tensor-core peak for
bf16 rows, and the plain fp32 (non-tensor-core) peak for fp32 rows. But PyTorch lets
cuDNN run fp32 convolutions as TF32 on tensor cores by default
(``torch.backends.cudnn.allow_tf32`` is True), so an fp32 row of a CNN may have run
against the much higher TF32 peak. This script gives fp32 rows against both peaks.

FLOPs of one training step depend only on the model and the batch shape, so they are
counted here on the CPU with the same counter the bench uses
(``deepstrata.bench.step_flops``); samples/s come from a bench run, either its
``--json`` output or ``--rate SETTING=SAMPLES_PER_S`` as recorded in BENCHMARKS.md:

    python benchmarks/bench_mfu.py --data ../shared/data/mnist --batch-size 512 --gpu H100 \\
        --rate "cuda fp32=44522" --rate "cuda bf16=14450"
    python benchmarks/bench_mfu.py --data ../shared/data/mnist --batch-size 512 --bench-json bench.json

Peaks are dense (no sparsity), TFLOP/s. The result is kept in ``benchmarks/results/``
(``--results`` to choose the file).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from deepstrata.bench import PEAK_TFLOPS, _prepare, step_flops  # noqa: E402
from results_io import machine_slug, result_path, write_results  # noqa: E402

# TF32 tensor-core peaks, dense: half the "with sparsity" figure of NVIDIA's datasheets.
TF32_TFLOPS = {"H200": 494.5, "H100": 494.5, "A100": 156.0}


def peaks(gpu: str) -> dict[str, float]:
    """{"bf16": …, "fp32": …, "tf32": …} for the first known name fragment in ``gpu``."""
    key = next((k for k in PEAK_TFLOPS if k in gpu.upper()), None)
    if key is None:
        raise SystemExit(f"no peak known for {gpu!r}; known: {', '.join(PEAK_TFLOPS)}")
    bf16, fp32 = PEAK_TFLOPS[key]
    found = {"bf16": bf16, "fp32": fp32}
    if key in TF32_TFLOPS:
        found["tf32"] = TF32_TFLOPS[key]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--gpu", help="device name or fragment, e.g. H100 (default: the bench JSON's device)")
    parser.add_argument("--rate", action="append", default=[], metavar="SETTING=SAMPLES_PER_S")
    parser.add_argument("--bench-json", type=Path, help="the output of `deepstrata bench --json`")
    parser.add_argument("--results", type=Path, default=None,
                        help="raw output JSON (default: benchmarks/results/bench_mfu_<date>_cpu<N>_seed0_<gpu>.json)")
    args = parser.parse_args()

    rows: list[dict] = []
    if args.bench_json:
        rows = [r for r in json.loads(args.bench_json.read_text()) if r["device"].startswith("cuda")]
    for item in args.rate:
        setting, _, rate = item.rpartition("=")
        rows.append({"setting": setting.strip(), "samples_per_second": float(rate),
                     "precision": "bf16" if "bf16" in setting else "fp16" if "fp16" in setting else "32"})
    if not rows:
        parser.error("give --rate SETTING=SAMPLES_PER_S or --bench-json FILE")
    gpu = args.gpu or next((r.get("gpu") for r in rows if r.get("gpu")), None)
    if not gpu:
        parser.error("--gpu is needed (the bench JSON does not name the device)")
    peak = peaks(gpu)

    torch.manual_seed(0)
    net, x, y, _, _ = _prepare(args.data, args.model, args.batch_size, args.width)
    flops = step_flops(net, x[: args.batch_size].float() / 255, y[: args.batch_size])
    per_sample = flops / args.batch_size
    print(f"{args.model} on {args.data}, batch {args.batch_size}: {flops / 1e9:.2f} GFLOP per training step "
          f"({per_sample / 1e6:.1f} MFLOP per sample); peaks for {gpu} (TFLOP/s, dense): {peak}")
    print(f"{'setting':<40} {'samples/s':>10} {'TFLOP/s':>8} {'MFU (peak)':>24}")
    out = []
    for row in rows:
        achieved = per_sample * row["samples_per_second"] / 1e12
        low = row["precision"] in ("bf16", "fp16")
        against = {"bf16": achieved / peak["bf16"]} if low else {"fp32": achieved / peak["fp32"]}
        if not low and "tf32" in peak:
            against["tf32"] = achieved / peak["tf32"]
        out.append({**row, "achieved_tflops": achieved, "mfu": against})
        text = ", ".join(f"{v * 100:.2f}% ({k} {peak[k]:g})" for k, v in against.items())
        print(f"{row['setting']:<40} {row['samples_per_second']:>10,.0f} {achieved:>8.2f} {text:>24}")
    results = {"data": args.data, "model": args.model, "width": args.width, "batch_size": args.batch_size,
               "gpu": gpu, "peaks_tflops": peak, "step_flops": flops, "rows": out,
               "note": "FLOPs counted on the CPU with deepstrata.bench.step_flops; samples/s as given"}
    write_results(args.results or result_path("bench_mfu", 0, machine_slug(gpu)), results, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
