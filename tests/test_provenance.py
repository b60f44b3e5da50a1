"""provenance.json names the scikit-learn version without importing scikit-learn (1-2 s of SciPy)."""

import json
import subprocess
import sys

import sklearn
import torch

from deepstrata.records import provenance


def test_provenance_names_the_installed_scikit_learn():
    record = provenance(torch.device("cpu"), 3)
    assert record["scikit-learn"] == sklearn.__version__
    assert record["seed"] == 3


def test_provenance_does_not_import_scikit_learn():
    code = ("import json, sys, torch; from deepstrata.records import provenance; "
            "record = provenance(torch.device('cpu'), 0); "
            "print(json.dumps([record['scikit-learn'], 'sklearn' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    version, imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert version == sklearn.__version__
    assert imported is False
