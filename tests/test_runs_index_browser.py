"""``DIR/index.html`` opened in headless Chromium with the network cut off: the page's own script runs and sorts.

Skipped when no Chromium is installed (``chromium``, ``chromium-browser``, ``google-chrome``,
``headless_shell`` … on PATH); ``DEEPSTRATA_CHROMIUM=/path/to/chrome`` names the binary instead
of searching PATH, and a name there that is not an executable skips the test too (so the skip
can be checked with ``DEEPSTRATA_CHROMIUM=/nonexistent``).

The browser gets ``--host-resolver-rules="MAP * ~NOTFOUND"`` and a proxy that refuses every
connection, so a page that fetched anything would show it broken; the page must not need to.
What the script does is checked on a copy of ``index.html`` with a probe appended: it records
any JavaScript error, clicks the headers as a reader would, reads back the row order, checks the
curve images decoded, and lists every resource the page loaded (``performance``) and every
``src``/``href`` in the live DOM; ``--dump-dom`` brings that back as JSON. A screenshot of the
real page (``--screenshot``) must be a real picture: the table's text and the curves' colours.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from deepstrata.cli import main
from deepstrata.runs_index import INDEX
from deepstrata.runs_table import list_runs
from tests.tracked_runs import failed_run

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome",
              "headless_shell", "chrome-headless-shell")
WINDOW = "1280,900"
# Matplotlib's first two line colours (tab:blue, tab:orange): what the curves are drawn in.
CURVE_COLOURS = ((31, 119, 180), (255, 127, 14))

PROBE = """
<script>
addEventListener("load", function () {
  var out = {errors: window.__probeErrors};
  function names() {
    return Array.prototype.map.call(document.querySelectorAll("#runs tbody tr"),
                                    function (r) { return r.cells[0].textContent; });
  }
  function click(col) {
    var th = document.querySelector('th[data-col="' + col + '"]');
    th.click();
    return {order: names(), dir: th.dataset.dir || null,
            arrow: getComputedStyle(th, "::after").content};
  }
  try {
    out.initial = names();
    out.name_asc = click("name");
    out.name_desc = click("name");
    out.test_asc = click("test");
    out.test_desc = click("test");
    out.marked = Array.prototype.map.call(document.querySelectorAll("th[data-dir]"),
                                          function (h) { return h.dataset.col; });
    out.images = Array.prototype.map.call(document.querySelectorAll("#curves img"), function (img) {
      return {complete: img.complete, width: img.naturalWidth, height: img.naturalHeight, alt: img.alt};
    });
    out.resources = performance.getEntriesByType("resource").map(function (e) { return e.name; });
    out.urls = [];
    document.querySelectorAll("[src], [href]").forEach(function (el) {
      var url = el.getAttribute("src") || el.getAttribute("href");
      out.urls.push({tag: el.tagName, url: url.slice(0, 40), resolved: (el.src || el.href).slice(0, 40)});
    });
    out.links = Array.prototype.map.call(document.querySelectorAll("#runs a"), function (a) { return a.href; });
    out.page_width = document.documentElement.scrollWidth;
    out.window_width = window.innerWidth;
  } catch (e) {
    out.errors.push("probe: " + e);
  }
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""
CATCH = ('<script>window.__probeErrors = []; addEventListener("error", function (e) '
         '{ window.__probeErrors.push(String(e.message)); });</script>')


def chromium() -> str | None:
    """The Chromium to use: ``DEEPSTRATA_CHROMIUM`` if set (a path or a name on PATH), else the first on PATH."""
    chosen = os.environ.get("DEEPSTRATA_CHROMIUM")
    if chosen:
        if os.path.isfile(chosen) and os.access(chosen, os.X_OK):
            return chosen
        return shutil.which(chosen)
    return next((found for name in CANDIDATES if (found := shutil.which(name))), None)


@pytest.fixture(scope="module")
def browser() -> str:
    found = chromium()
    if found is None:
        chosen = os.environ.get("DEEPSTRATA_CHROMIUM")
        pytest.skip(f"DEEPSTRATA_CHROMIUM={chosen}: not an executable" if chosen else
                    f"no headless Chromium installed (none of {', '.join(CANDIDATES)} on PATH; "
                    "apt-get install chromium, or set DEEPSTRATA_CHROMIUM)")
    return found


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """Two finished two-epoch digits runs (different learning rates), a failed one and a foreign folder."""
    runs = tmp_path_factory.mktemp("browser-runs") / "runs"
    for name, lr in (("slow", "0.003"), ("fast", "0.03")):
        assert main(["fit", "--data", "digits", "--epochs", "2", "--width", "8", "--batch-size", "128",
                     "--lr", lr, "--no-baselines", "--device", "cpu", "--threads", "1", "--seed", "1",
                     "--quiet", "--out", str(runs / name)]) == 0
    failed_run(runs)
    (runs / "notes").mkdir()
    (runs / "notes" / "todo.txt").write_text("try a wider cnn\n")
    return runs


@pytest.fixture()
def folder(built, tmp_path):
    """A copy of the runs with its index page written by ``deepstrata runs DIR --html``."""
    runs = tmp_path / "runs"
    shutil.copytree(built, runs)
    assert main(["runs", str(runs), "--html"]) == 0
    return runs


def headless(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Chromium headless, its own empty profile, no GPU, every host unresolvable and every connection refused."""
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
               "--disable-extensions", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
               "--hide-scrollbars", f"--window-size={WINDOW}", "--virtual-time-budget=3000", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_the_page_sorts_in_a_browser_and_loads_nothing(browser, folder, tmp_path):
    page = (folder / INDEX).read_text(encoding="utf-8")
    # Self-contained: no reference out of the page (links to the runs' reports are relative).
    assert not re.search(r'(src|href)\s*=\s*"(https?:|//|file:)', page)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    probe = folder / "probe.html"  # next to index.html, so the report links resolve the same way
    probe.write_text(page.replace("<head>", "<head>" + CATCH, 1).replace("</body>", PROBE + "</body>", 1),
                     encoding="utf-8")
    dom = headless(browser, tmp_path / "profile", "--dump-dom", probe.as_uri()).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    seen = json.loads(html.unescape(found.group(1)))

    assert seen["errors"] == []
    assert sorted(seen["initial"]) == ["failed", "fast", "notes", "slow"]
    # The page's own script: a click sorts ascending and marks the header, a second click descending.
    assert seen["name_asc"]["order"] == ["failed", "fast", "notes", "slow"]
    assert seen["name_asc"]["dir"] == "asc" and "\u25b2" in seen["name_asc"]["arrow"]
    assert seen["name_desc"]["order"] == ["slow", "notes", "fast", "failed"]
    assert seen["name_desc"]["dir"] == "desc" and "\u25bc" in seen["name_desc"]["arrow"]
    # By test metric, as numbers: the runs with one first, lower first then higher first; the rest after them.
    tests = {row["name"]: row["test"] for row in list_runs(folder) if row["test"] is not None}
    assert sorted(tests) == ["fast", "slow"] and tests["fast"] != tests["slow"]
    low_first = sorted(tests, key=tests.get)
    assert seen["test_asc"]["order"][:2] == low_first and seen["test_asc"]["dir"] == "asc"
    assert seen["test_desc"]["order"][:2] == low_first[::-1] and seen["test_desc"]["dir"] == "desc"
    assert sorted(seen["test_desc"]["order"][2:]) == ["failed", "notes"]
    assert seen["marked"] == ["test"]  # one header marked at a time
    # The curves: one decoded picture per validation metric.
    assert [img["alt"].split()[0] for img in seen["images"]] == ["val_accuracy", "val_loss"]
    assert all(img["complete"] and img["width"] > 200 and img["height"] > 100 for img in seen["images"])
    # Nothing was fetched: no resource entry at all, every src/href a data: URI or a file beside the page.
    assert seen["resources"] == []
    for ref in seen["urls"]:
        assert ref["url"].startswith("data:image/png;base64,") or ref["resolved"].startswith("file://"), ref
    assert sorted(seen["links"]) == sorted((folder / name / "report.html").as_uri() for name in tests)
    assert all((folder / name / "report.html").is_file() for name in tests)
    # The page never scrolls sideways: a table wider than the window scrolls inside its own box.
    assert seen["page_width"] <= seen["window_width"], seen


def test_a_screenshot_of_the_page_shows_the_table_and_the_curves(browser, folder, tmp_path):
    shot = tmp_path / "index.png"
    done = headless(browser, tmp_path / "profile", f"--screenshot={shot}", (folder / INDEX).as_uri())
    assert shot.is_file() and shot.stat().st_size > 20_000, done.stderr[-2000:]
    image = pytest.importorskip("PIL.Image").open(shot).convert("RGB")
    assert image.size == tuple(int(n) for n in WINDOW.split(","))
    pixels = np.asarray(image, dtype=np.int16).reshape(-1, 3)
    ink = float((pixels.sum(axis=1) < 600).mean())
    assert 0.01 < ink < 0.5, ink  # text and lines on a white page: neither blank nor a block of colour
    assert len(np.unique(pixels.astype(np.int32) @ np.array([65536, 256, 1]))) > 100  # distinct colours
    for colour in CURVE_COLOURS:  # both runs' curves drawn, inside the window
        near = int((np.abs(pixels - np.array(colour)).sum(axis=1) < 60).sum())
        assert near > 200, (colour, near)
