"""What a fit pays besides training: imports, the baselines' features, the report, the interpreter's exit.

Each cost is timed in fresh processes (``--repeats`` each, the median kept), alone on the
machine, so the seconds of ``make demo`` that are not training can be divided up:

* ``import torch`` and, after it, ``import torch._dynamo`` — what every ``torch.optim``
  optimiser imports on its first call, and ``deepstrata.engine.adamw`` avoids; ``import
  sklearn.linear_model, sklearn.preprocessing`` after torch (the baselines' classifier);
  ``matplotlib.figure`` with its Agg canvas after torch (what the report drew with before
  ``report_svg``).
* the interpreter's exit after torch and scikit-learn are loaded: plain, and after
  ``gc.freeze()`` (what ``cli.run`` does).
* HOG features of the 1,797 digits: one ``skimage.feature.hog`` call per image against the
  batched ``hog_descriptors`` (the two are checked equal first).
* the first optimiser step of the digits CNN: ``torch.optim.AdamW`` against deepstrata's.
* ``import torch`` while a second process imports scikit-learn (what ``cli`` does with the
  baselines' helper, ``deepstrata.baselines.helper``): the seconds until both are done, beside
  the two imports one after the other in one process.

    PYTHONPATH=/tmp/snap/src python benchmarks/fit_fixed_costs.py --repeats 5

Raw output: ``benchmarks/results/fit_fixed_costs_<date>_<machine>_seed0.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from results_io import result_path, write_results

IMPORTS = {
    "import torch": ("", "import torch"),
    "import torch._dynamo (after torch)": ("import torch", "import torch._dynamo"),
    "import sklearn.linear_model + preprocessing (after torch)":
        ("import torch", "import sklearn.linear_model, sklearn.preprocessing"),
    "import matplotlib.figure + Agg (after torch)":
        ("import torch", "import matplotlib.figure, matplotlib.backends.backend_agg"),
}

# The printed clock marks the moment before the interpreter starts to exit.
EXITS = {
    "exit after torch + sklearn": "",
    "exit after torch + sklearn, gc.freeze() first": "gc.freeze()",
}

HOG = """
import json, time, numpy as np
from skimage.feature import hog
from deepstrata.baselines.image_features import _to_gray, hog_cell_size, hog_descriptors
from deepstrata.data.images import load_images
x = load_images("digits").x.numpy()
gray, cell = _to_gray(x), hog_cell_size(8, 8)
t = time.perf_counter()
ref = np.stack([hog(g, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(2, 2),
                    block_norm="L2-Hys") for g in gray])
t1 = time.perf_counter()
ours = hog_descriptors(gray, cell)
t2 = time.perf_counter()
print(json.dumps({"skimage_per_image": t1 - t, "batched": t2 - t1, "equal": bool(np.array_equal(ref, ours))}))
"""

FIRST_STEP = """
import json, sys, time, torch
from deepstrata.models.cnn import CNN
torch.manual_seed(0)
model = CNN((1, 8, 8), 10)
loss = torch.nn.functional.cross_entropy(model(torch.rand(128, 1, 8, 8)), torch.randint(0, 10, (128,)))
loss.backward()
t = time.perf_counter()
if sys.argv[1] == "torch":
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
else:
    from deepstrata.engine.adamw import AdamW
    opt = AdamW(model.parameters(), lr=3e-3)
opt.step()
print(json.dumps({"seconds": time.perf_counter() - t, "dynamo_imported": "torch._dynamo" in sys.modules}))
"""


def timed_import(before: str, what: str) -> float:
    code = f"{before}\nimport time\nt = time.perf_counter()\n{what}\nprint(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def side_by_side() -> float:
    """Seconds until ``import torch`` here and scikit-learn's import in a second process are both done."""
    start = time.perf_counter()
    other = subprocess.Popen([sys.executable, "-c", "import sklearn.linear_model, sklearn.preprocessing"])
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    other.wait()
    return time.perf_counter() - start


def one_after_the_other() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, sklearn.linear_model, sklearn.preprocessing"], check=True)
    return time.perf_counter() - start


def timed_exit(tail: str) -> float:
    code = ("import gc, sys, torch, sklearn.linear_model\n" + tail + "\nprint('ready', flush=True)\n")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    process.stdout.readline()
    start = time.perf_counter()
    process.wait()
    return time.perf_counter() - start


def json_run(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args()
    path = result_path(__file__, [0])
    rows: dict[str, dict] = {}

    def keep(name: str, samples: list[float], **extra) -> None:
        rows[name] = {"median_s": round(statistics.median(samples), 4), "samples_s": [round(s, 4) for s in samples],
                      **extra}
        print(f"{name}: median {rows[name]['median_s']:.3f} s ({', '.join(f'{s:.3f}' for s in samples)})")
        write_results(path, {"repeats": options.repeats, "rows": rows}, [0])

    for name, (before, what) in IMPORTS.items():
        keep(name, [timed_import(before, what) for _ in range(options.repeats)])
    for name, tail in EXITS.items():
        keep(name, [timed_exit(tail) for _ in range(options.repeats)])
    hog_runs = [json_run(HOG) for _ in range(options.repeats)]
    assert all(run["equal"] for run in hog_runs), "batched HOG differs from scikit-image's"
    keep("HOG of 1,797 digits, skimage per image", [run["skimage_per_image"] for run in hog_runs])
    keep("HOG of 1,797 digits, batched (equal: True)", [run["batched"] for run in hog_runs])
    for kind in ("torch", "deepstrata"):
        runs = [json_run(FIRST_STEP, kind) for _ in range(options.repeats)]
        keep(f"first AdamW step of the digits CNN, {kind}", [run["seconds"] for run in runs],
             dynamo_imported=runs[0]["dynamo_imported"])
    keep("torch and scikit-learn imported in one process (process start included)",
         [one_after_the_other() for _ in range(options.repeats)])
    keep("torch here, scikit-learn in a second process at once, until both are done",
         [side_by_side() for _ in range(options.repeats)])
    print(f"raw output: {path}")


if __name__ == "__main__":
    main()
