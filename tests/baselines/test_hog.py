"""The batched HOG against scikit-image's ``hog``, image by image, bit for bit."""

import io
import tarfile

import numpy as np
import pytest
from PIL import Image
from skimage.feature import hog

from deepstrata.baselines import image_features
from deepstrata.baselines.image_features import _to_gray, hog_cell_size, hog_descriptors
from deepstrata.data.images import load_images


def _reference(gray: np.ndarray, cell: int, orientations: int = 9, block: int = 2) -> np.ndarray:
    return np.stack([hog(image, orientations=orientations, pixels_per_cell=(cell, cell),
                         cells_per_block=(block, block), block_norm="L2-Hys", feature_vector=True)
                     for image in gray])


def _gray(source: str, count: int) -> tuple[np.ndarray, int]:
    x = load_images(source).x[:count].numpy()
    return _to_gray(x), hog_cell_size(x.shape[2], x.shape[3])


def test_digits_every_image_bitwise():
    gray, cell = _gray("digits", 1797)
    assert np.array_equal(hog_descriptors(gray, cell), _reference(gray, cell))


def test_mnist_bitwise(shared_data):
    gray, cell = _gray(str(shared_data / "mnist"), 300)
    assert np.array_equal(hog_descriptors(gray, cell), _reference(gray, cell))


def test_cifar_photos_bitwise(shared_data):
    """The first 200 photos of the CIFAR-10 JPEG archive, read as a stream (decoding all 60,000 takes 20 s)."""
    archive = shared_data / "cifar10-jpeg" / "cifar10-jpeg.tar.xz"
    photos = []
    with tarfile.open(archive, "r|xz") as tar:
        for member in tar:
            if member.isfile() and member.name.lower().endswith((".jpg", ".jpeg", ".png")):
                with Image.open(io.BytesIO(tar.extractfile(member).read())) as image:
                    photos.append(np.asarray(image.convert("RGB")).transpose(2, 0, 1))
                if len(photos) == 200:
                    break
    x = np.stack(photos)
    gray, cell = _to_gray(x), hog_cell_size(x.shape[2], x.shape[3])
    assert np.array_equal(hog_descriptors(gray, cell), _reference(gray, cell))


@pytest.mark.parametrize("shape, cell, orientations, block",
                         [((5, 30, 30), 7, 9, 2),    # 2 rows and columns past the last whole cell
                          ((4, 12, 20), 3, 9, 2),    # not square
                          ((3, 16, 16), 4, 8, 3),    # 22.5-degree bins, 3x3 blocks
                          ((2, 8, 8), 2, 6, 2)])
def test_random_images_other_shapes_and_settings(shape, cell, orientations, block, monkeypatch):
    monkeypatch.setattr(image_features, "HOG_CHUNK_PIXELS", 2 * shape[1] * shape[2])  # several chunks, one short
    gray = np.random.default_rng(0).random(shape, dtype=np.float32)
    got = hog_descriptors(gray, cell, orientations, block)
    assert np.array_equal(got, _reference(gray, cell, orientations, block))


def test_memory_is_bounded_by_pixels_not_images(monkeypatch):
    import tracemalloc

    gray = np.random.default_rng(0).random((24, 96, 96), dtype=np.float32)
    budget = 4 * 96 * 96  # four of these images a pass
    monkeypatch.setattr(image_features, "HOG_CHUNK_PIXELS", budget)
    tracemalloc.start()
    try:
        got = hog_descriptors(gray, 12)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * budget + got.nbytes  # all 24 images at once would take ~6x that
    assert np.array_equal(got, _reference(gray, 12))


def test_flat_images_and_an_angle_that_rounds_to_180():
    flat = np.full((1, 8, 8), 0.5, np.float32)
    # A vertical gradient of -1e-30 against a horizontal one of 1: atan2 in degrees is -6e-29, and
    # -6e-29 % 180 rounds to 180.0, which scikit-image counts in no bin.
    edge = np.zeros((1, 8, 8), np.float32)
    edge[0, :, 4:] = 1.0
    edge[0, 5:, :] -= np.float32(1e-30)
    edge[0, 6, :] -= np.float32(1e-30)
    batch = np.concatenate([flat, edge])
    got = hog_descriptors(batch, 2)
    assert np.array_equal(got, _reference(batch, 2))
    assert not got[0].any()


def test_no_images_give_no_rows_of_the_right_width():
    assert hog_descriptors(np.zeros((0, 8, 8), np.float32), 2).shape == (0, 324)
