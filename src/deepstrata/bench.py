"""``deepstrata bench``: training throughput of the one loop on this machine's hardware.

Each configuration trains the model through ``engine.loop.train`` (the same code path as
``fit``) for two short epochs on the data set's first examples and reports samples/s of
the second epoch, so start-up, compilation and allocator warm-up are not counted.

Measured: 1 process on the CPU; N processes on the CPU (gloo, launched through
torchrun, one thread each as torchrun sets) with the scaling efficiency
``throughput(N) / (N × throughput(1))``; and, when a GPU exists, one GPU at fp32 and
bf16, with and without ``torch.compile``, with the data in host memory or resident on
the device, plus the model FLOP utilisation (FLOPs of one training step counted by
``torch.utils.flop_counter`` against the device's peak).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from deepstrata.config import TrainConfig

# Dense peak TFLOP/s (no sparsity) by device name fragment: (bf16/fp16 tensor cores, fp32 without TF32).
PEAK_TFLOPS = {
    "H200": (989.0, 67.0),
    "H100": (989.0, 67.0),
    "A100": (312.0, 19.5),
    "L4": (121.0, 30.3),
    "A10": (125.0, 31.2),
    "T4": (65.0, 8.1),
}


@dataclass
class BenchResult:
    setting: str
    device: str
    processes: int
    precision: str
    compile: bool
    data_on_device: bool
    samples_per_second: float
    step_tflops: float | None = None
    mfu: float | None = None


def _prepare(data: str, model: str, examples: int, width: int | None):
    from deepstrata.data.images import load_images
    from deepstrata.data.split import split_dataset
    from deepstrata.models.registry import build_image_model
    from deepstrata.families.image.task import channel_stats

    splits = split_dataset(load_images(data), seed=0)
    x, y = splits.train_x[:examples], splits.train_y[:examples]
    mean, std = channel_stats(x)
    torch.manual_seed(0)
    kwargs = {"width": width} if width else {}
    net = build_image_model(model, tuple(x.shape[1:]), len(splits.classes), mean=mean, std=std, **kwargs)
    return net, x, y, splits.val_x[:256], splits.val_y[:256]


def step_flops(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """FLOPs of one forward+backward step on batch ``x`` (counted, not estimated)."""
    from torch.utils.flop_counter import FlopCounterMode

    net.train()
    with FlopCounterMode(display=False) as counter:
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
    net.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def measure(data: str, model: str, *, device: str, precision: str = "32", compile: bool = False,
            data_on_device: bool = False, batch_size: int = 256, steps: int = 50, width: int | None = None,
            channels_last: bool = False) -> BenchResult:
    """Samples/s of the second of two epochs of ``steps`` steps each, through the engine."""
    from deepstrata.engine import distributed
    from deepstrata.engine.loop import train
    from deepstrata.families.image.task import ImageClassificationTask

    net, x, y, vx, vy = _prepare(data, model, batch_size * steps, width)
    target = torch.device(device)
    if data_on_device:
        x, y, vx, vy = (t.to(target) for t in (x, y, vx, vy))
    task = ImageClassificationTask(x, y, vx, vy, num_classes=int(y.max()) + 1, precision=precision,
                                   channels_last=channels_last)
    cfg = TrainConfig(epochs=2, batch_size=batch_size, device=device, precision=precision, compile=compile,
                      channels_last=channels_last, schedule="constant")
    with tempfile.TemporaryDirectory() as tmp:
        result = train(net, task, cfg, Path(tmp), quiet=True)
    env = distributed.current()
    seconds = result.history[1]["seconds"] - result.history[0]["seconds"]
    rate = len(x) / seconds  # every process walks its share of the same global batches
    out = BenchResult(
        setting="", device=str(result.device), processes=env.world_size, precision=precision, compile=compile,
        data_on_device=data_on_device, samples_per_second=rate,
    )
    if target.type == "cuda":
        flops = step_flops(net.to(target), x[:batch_size].to(target).float() / 255, y[:batch_size].to(target))
        out.step_tflops = flops / 1e12
        name = torch.cuda.get_device_name(target)
        peak = next((p for key, p in PEAK_TFLOPS.items() if key in name), None)
        if peak is not None:
            achieved = flops * rate / batch_size
            out.mfu = achieved / ((peak[0] if precision in ("bf16", "fp16") else peak[1]) * 1e12)
    return out


def _cpu_processes(data: str, model: str, processes: int, batch_size: int, steps: int, width: int | None) -> BenchResult:
    """Launch ``processes`` gloo workers with torchrun and read rank 0's result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "deepstrata.bench", "--worker", json.dumps({"data": data, "model": model, "batch_size": batch_size,
                                                                  "steps": steps, "width": width, "out": str(out)})]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"{processes}-process benchmark failed: {tail[0]}")
        return BenchResult(**json.loads(out.read_text()))


def run_bench(data: str = "digits", model: str = "cnn", *, processes: int = 2, batch_size: int = 256,
              steps: int = 30, width: int | None = None, gpu: bool | None = None) -> list[BenchResult]:
    """Every configuration this machine supports; the first row is the single-process CPU baseline."""
    rows: list[BenchResult] = []
    threads = torch.get_num_threads()
    one = measure(data, model, device="cpu", batch_size=batch_size, steps=steps, width=width)
    one.setting = f"cpu, 1 process, {threads} threads"
    rows.append(one)
    one_thread = None
    if processes > 1:
        torch.set_num_threads(1)
        one_thread = measure(data, model, device="cpu", batch_size=batch_size, steps=steps, width=width)
        one_thread.setting = "cpu, 1 process, 1 thread"
        torch.set_num_threads(threads)
        rows.append(one_thread)
        many = _cpu_processes(data, model, processes, batch_size, steps, width)
        many.setting = f"cpu, {processes} processes (gloo), 1 thread each"
        rows.append(many)
    if gpu if gpu is not None else torch.cuda.is_available():
        for precision in ("32", "bf16"):
            for compile_ in (False, True):
                for on_device in (False, True):
                    r = measure(data, model, device="cuda", precision=precision, compile=compile_,
                                data_on_device=on_device, batch_size=batch_size, steps=steps, width=width,
                                channels_last=True)
                    r.setting = (f"cuda {precision}{' + compile' if compile_ else ''}"
                                 f"{', data on device' if on_device else ''}")
                    rows.append(r)
    return rows


def format_bench(rows: list[BenchResult], processes: int) -> str:
    lines = [f"{'setting':<48} {'samples/s':>11} {'MFU':>7}"]
    for r in rows:
        mfu = f"{r.mfu * 100:.1f}%" if r.mfu is not None else "—"
        lines.append(f"{r.setting:<48} {r.samples_per_second:>11.0f} {mfu:>7}")
    single = next((r for r in rows if r.setting.endswith("1 thread")), None)
    many = next((r for r in rows if r.processes > 1), None)
    if single and many:
        efficiency = many.samples_per_second / (processes * single.samples_per_second)
        lines.append(f"scaling efficiency, {processes} processes vs 1 (1 thread each): {efficiency:.2f}")
    return "\n".join(lines)


def _worker(spec: dict) -> None:
    torch.set_num_threads(1)
    result = measure(spec["data"], spec["model"], device="cpu", batch_size=spec["batch_size"], steps=spec["steps"],
                     width=spec["width"])
    from deepstrata.engine import distributed

    if distributed.current().is_main:
        Path(spec["out"]).write_text(json.dumps(asdict(result)))
    distributed.teardown()


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--worker":
    _worker(json.loads(sys.argv[2]))
