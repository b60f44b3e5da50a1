"""``deepstrata runs DIR --html``: one self-contained page with the table, links and curves; never another's page."""

from __future__ import annotations

import re
import shutil

import pytest

from deepstrata.cli import main
from deepstrata.runs_index import INDEX, OWN_MARK
from tests.tracked_runs import runs_folder


@pytest.fixture()
def folder(tmp_path_factory, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(runs_folder(tmp_path_factory), runs)
    return runs


def test_the_page_holds_rows_links_and_curves_and_needs_no_network(folder, capsys):
    assert main(["runs", str(folder), "--html"]) == 0
    assert capsys.readouterr().out.strip() == f"index: {folder / INDEX}"
    page = (folder / INDEX).read_text(encoding="utf-8")
    assert page.startswith(OWN_MARK)
    assert '<a href="finished/report.html">finished</a>' in page
    assert (folder / "finished" / "report.html").is_file()
    for name in ("killed", "notes"):
        assert f'data-v="{name}">{name}</td>' in page
    assert "resumable" in page and "foreign" in page
    assert "<script>" in page and "addEventListener" in page
    assert page.count('src="data:image/png;base64,') >= 2  # val_accuracy and val_loss
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', page)
    assert "<link" not in page and "@import" not in page
    assert main(["runs", str(folder), "--html"]) == 0  # its own page is replaced


def test_an_index_deepstrata_did_not_write_is_refused(folder, capsys):
    (folder / INDEX).write_text("<html>my own notes</html>")
    assert main(["runs", str(folder), "--html"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not written by deepstrata" in err[0]
    assert (folder / INDEX).read_text() == "<html>my own notes</html>"
