"""Evidence that the EfficientNet-Lite0 port computes what its ImageNet weights were trained for.

Three measurements on CIFAR-10 photos (``../shared/data/cifar10-jpeg``, read straight
from the tar), upscaled from 32 to ``--size`` px (bicubic):

(a) Zero-shot: the 1000-way ImageNet predictions on ``--n-test`` test images (the same
    number from each class, drawn with ``--seed``), scored through a fixed map from
    ImageNet classes to CIFAR-10 classes (``IMAGENET_CLASSES``): mapped top-1 (the top
    ImageNet class is one of the image's class), mapped top-5, and 10-way (the CIFAR class
    with the largest summed probability; chance 10%).
(b) The same scores for the port's alternatives: torchvision's ImageNet mean/std instead of
    127/128, symmetric instead of TF 'same' padding, BatchNorm eps 1e-5 instead of 1e-3;
    ``paired`` counts the images only the port, or only the variant, gets right (10-way).
(c) Linear probe: logistic regression on the pooled 1280-d features of ``--n-train``
    train images, scored on the test images, for the pretrained network and for a
    randomly initialised copy (seed ``--seed``). Features are standardised first, so the
    random network's small activations do not handicap it.

    .venv/bin/python benchmarks/efficientnet_port_check.py [--n-test 1000] [--n-train 2000] [--out FILE]

Raw output: ``benchmarks/results/efficientnet_port_check_<date>_<machine>_seed<seed>.json``.
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from deepstrata.models.efficientnet_lite import efficientnet_lite0  # noqa: E402
from results_io import result_path, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpeg" / "cifar10-jpeg.tar.xz"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def span(first: int, last: int) -> list[int]:
    return list(range(first, last + 1))


# ImageNet class indices that name each CIFAR-10 class (fixed before any measurement; the same map as
# tests/models/test_efficientnet_lite.py).
IMAGENET_CLASSES = {
    "airplane": [404, 895, 908],  # airliner, warplane, wing
    "automobile": [436, 468, 479, 511, 581, 609, 627, 656, 661, 751, 817],  # beach wagon, cab, car wheel,
    # convertible, grille, jeep, limousine, minivan, Model T, racer, sports car
    "bird": span(7, 24) + span(80, 100) + span(127, 146),
    "cat": span(281, 285),  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "deer": [350, 351, 352, 353],  # ibex, hartebeest, impala, gazelle
    "dog": span(151, 268),
    "frog": [30, 31, 32],  # bullfrog, tree frog, tailed frog
    "horse": [339, 603],  # sorrel, horse cart
    "ship": [403, 472, 484, 510, 554, 576, 625, 628, 724, 780, 814, 833, 871, 913, 914],  # aircraft carrier,
    # canoe, catamaran, container ship, fireboat, gondola, lifeboat, liner, pirate, schooner, speedboat,
    # submarine, trimaran, wreck, yawl
    "truck": [555, 569, 675, 717, 864, 867],  # fire engine, garbage truck, moving van, pickup, tow truck,
    # trailer truck
}
TORCHVISION_STATS = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def read_cifar(archive: Path, n_test: int, n_train: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"test": (images uint8 [N, 32, 32, 3], labels), "train": ...}``, the same count per class, seeded."""
    members: dict[tuple[str, str], list[tarfile.TarInfo]] = {}
    rng = np.random.default_rng(seed)
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = member.name.split("/")
            if len(parts) == 4 and parts[3].endswith(".jpg") and parts[2] in CLASSES:
                members.setdefault((parts[1], parts[2]), []).append(member)
        out = {}
        for split, count in (("test", n_test), ("train", n_train)):
            images, labels = [], []
            for label, name in enumerate(CLASSES):
                pool = sorted(members[(split, name)], key=lambda m: m.name)
                for index in sorted(rng.choice(len(pool), size=count // len(CLASSES), replace=False)):
                    data = tar.extractfile(pool[index]).read()
                    images.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
                    labels.append(label)
            out[split] = (np.stack(images), np.array(labels))
    return out


def batches(images: np.ndarray, size: int, batch: int):
    for start in range(0, len(images), batch):
        x = torch.from_numpy(images[start:start + batch]).permute(0, 3, 1, 2).float().div(255)
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
        yield x.contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def features_and_logits(model, images: np.ndarray, size: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Pooled 1280-d features and the 1000 logits computed from them, in one pass."""
    model = model.eval().to(memory_format=torch.channels_last)
    feats, logits = [], []
    for x in batches(images, size, batch):
        f = model.forward_features(x)
        feats.append(f)
        logits.append(model.layers["head"].fc(f))
    return torch.cat(feats).numpy(), torch.cat(logits).numpy()


def mapped_scores(logits: np.ndarray, labels: np.ndarray) -> dict:
    probs = torch.from_numpy(logits).softmax(1)
    top5 = probs.topk(5, dim=1).indices.numpy()
    wanted = [set(IMAGENET_CLASSES[CLASSES[y]]) for y in labels]
    top1_hit = np.array([top5[i, 0] in wanted[i] for i in range(len(labels))])
    top5_hit = np.array([bool(wanted[i] & set(top5[i].tolist())) for i in range(len(labels))])
    per_class = torch.stack([probs[:, IMAGENET_CLASSES[name]].sum(1) for name in CLASSES], 1)
    ten_hit = per_class.argmax(1).numpy() == labels
    nll = -np.log(per_class.numpy()[np.arange(len(labels)), labels] / per_class.numpy().sum(1) + 1e-12)
    return {
        "mapped_top1": float(top1_hit.mean()), "mapped_top5": float(top5_hit.mean()),
        "ten_way": float(ten_hit.mean()), "ten_way_nll": float(nll.mean()),
        "mapped_mass": float(per_class.sum(1).mean()),  # probability the model puts on any mapped class
        "per_class": {name: {"mapped_top1": float(top1_hit[labels == c].mean()),
                             "mapped_top5": float(top5_hit[labels == c].mean()),
                             "ten_way": float(ten_hit[labels == c].mean())} for c, name in enumerate(CLASSES)},
        "_ten_hit": ten_hit,
    }


def probe(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], threads: int, seed: int) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    with threadpool_limits(limits=threads):
        scaler = StandardScaler().fit(train[0])
        clf = LogisticRegression(max_iter=3000, C=1.0, random_state=seed)
        clf.fit(scaler.transform(train[0]), train[1])
        return {"train_accuracy": float(clf.score(scaler.transform(train[0]), train[1])),
                "test_accuracy": float(clf.score(scaler.transform(test[0]), test[1])),
                "iterations": int(np.max(clf.n_iter_)), "fit_seconds": round(time.perf_counter() - started, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-test", type=int, default=1000, help="test images (a multiple of 10)")
    parser.add_argument("--n-train", type=int, default=2000, help="train images for the probe (a multiple of 10)")
    parser.add_argument("--size", type=int, default=224, help="side the 32 px images are upscaled to")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch and BLAS threads")
    parser.add_argument("--no-variants", action="store_true", help="skip (b)")
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    parser.add_argument("--out", type=Path, default=None, help="results file (default: benchmarks/results/...)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        timings[name] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()
        print(f"{name}: {timings[name]} s", file=sys.stderr, flush=True)

    data = read_cifar(args.archive, args.n_test, args.n_train, args.seed)
    test_images, test_labels = data["test"]
    train_images, train_labels = data["train"]
    lap("read")

    pretrained = efficientnet_lite0()
    test_feats, test_logits = features_and_logits(pretrained, test_images, args.size, args.batch_size)
    lap("pretrained_test_forward")
    zero_shot = mapped_scores(test_logits, test_labels)
    reference_hits = zero_shot.pop("_ten_hit")

    variants = {}
    if not args.no_variants:
        def eps_1e5():
            model = efficientnet_lite0()
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.eps = 1e-5
            return model

        builders = {"torchvision_mean_std": lambda: efficientnet_lite0(**TORCHVISION_STATS),
                    "symmetric_padding": lambda: efficientnet_lite0(padding="symmetric"),
                    "bn_eps_1e-5": eps_1e5}
        for name, build in builders.items():
            _, logits = features_and_logits(build(), test_images, args.size, args.batch_size)
            scores = mapped_scores(logits, test_labels)
            hits = scores.pop("_ten_hit")
            scores.pop("per_class")
            scores["paired_ten_way"] = {"only_port": int((reference_hits & ~hits).sum()),
                                        "only_variant": int((~reference_hits & hits).sum())}
            variants[name] = scores
            lap(f"variant_{name}")

    train_feats, _ = features_and_logits(pretrained, train_images, args.size, args.batch_size)
    lap("pretrained_train_forward")
    probe_pretrained = probe((train_feats, train_labels), (test_feats, test_labels), args.threads, args.seed)
    lap("probe_pretrained_fit")

    torch.manual_seed(args.seed)
    random_init = efficientnet_lite0(pretrained=False)
    random_train, _ = features_and_logits(random_init, train_images, args.size, args.batch_size)
    random_test, _ = features_and_logits(random_init, test_images, args.size, args.batch_size)
    lap("random_forward")
    probe_random = probe((random_train, train_labels), (random_test, test_labels), args.threads, args.seed)
    lap("probe_random_fit")

    results = {
        "settings": {"n_test": len(test_labels), "n_train": len(train_labels), "size": args.size,
                     "resize": "bicubic 32 -> size, clamped to [0, 1]", "batch_size": args.batch_size,
                     "threads": args.threads, "data": str(args.archive.name), "data_seed": args.seed,
                     "random_init_seed": args.seed, "imagenet_classes": IMAGENET_CLASSES,
                     "probe": "StandardScaler + LogisticRegression(C=1, lbfgs, max_iter=3000) on pooled 1280-d"},
        "zero_shot": zero_shot,
        "variants": variants,
        "probe": {"pretrained": probe_pretrained, "random_init": probe_random},
        "seconds": {**timings, "total": round(sum(timings.values()), 1)},
    }
    out = args.out or result_path("efficientnet_port_check", args.seed)
    write_results(out, results, args.seed)
    print(f"zero-shot: mapped top-1 {zero_shot['mapped_top1']:.3f}, top-5 {zero_shot['mapped_top5']:.3f}, "
          f"10-way {zero_shot['ten_way']:.3f}; probe: pretrained {probe_pretrained['test_accuracy']:.3f}, "
          f"random {probe_random['test_accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
