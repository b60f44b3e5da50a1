"""The digits set is read from scikit-learn's bundled file without importing scikit-learn."""

import subprocess
import sys

import numpy as np

from deepstrata.data.images import read_digits


def test_the_same_images_and_labels_as_scikit_learn_reads():
    from sklearn.datasets import load_digits

    reference = load_digits()
    ds = read_digits()
    expected = np.rint(reference.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    assert np.array_equal(ds.x.squeeze(1).numpy(), expected)
    assert np.array_equal(ds.y.numpy(), reference.target)
    assert ds.classes == [str(c) for c in reference.target_names]


def test_reading_digits_does_not_import_scikit_learn():
    code = "import sys; from deepstrata.data.images import read_digits; read_digits(); print('sklearn' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
