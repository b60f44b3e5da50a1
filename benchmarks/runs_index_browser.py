"""The runs index page (``deepstrata runs DIR --html``) in headless Chromium, network cut off: a documented check.

Run by hand where a Chromium is installed (``apt-get install chromium``; the test suite does not
need one). It builds a small runs folder — two finished two-epoch digits runs with different
learning rates (seed 1), a failed run and a foreign folder — writes its index page and opens it in
headless Chromium with ``--host-resolver-rules="MAP * ~NOTFOUND"`` and a proxy that refuses every
connection, so a page that fetched anything would show it broken. On a copy of the page with a
probe appended it records any JavaScript error, clicks the headers as a reader would, reads back
the row order, checks the curve images decoded, lists every resource loaded (``performance``)
and every ``src``/``href`` in the live DOM (``--dump-dom`` brings that back as JSON). A
screenshot of the real page must be a real picture: the table's text and both curves' colours.
Any failed check ends the script with a traceback and status 1.

    python benchmarks/runs_index_browser.py [--chromium PATH] [--screenshot docs/images/runs_index.png]

Raw output: ``benchmarks/results/runs_index_browser_<date>_<machine>_seed1.json`` (the browser's
version, what the probe saw, the screenshot's statistics).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from deepstrata.cli import main as cli
from deepstrata.rundir import abandon_run, prepare_run_dir
from deepstrata.runs_index import INDEX
from deepstrata.runs_table import list_runs
from results_io import result_path, write_results

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


def chromium(chosen: str | None) -> str:
    """The Chromium to use: ``--chromium`` (a path or a name on PATH), else the first of CANDIDATES on PATH."""
    found = (chosen if chosen and os.path.isfile(chosen) and os.access(chosen, os.X_OK)
             else shutil.which(chosen) if chosen
             else next((path for name in CANDIDATES if (path := shutil.which(name))), None))
    if found is None:
        sys.exit(f"no Chromium: {chosen or ', '.join(CANDIDATES)} (apt-get install chromium, or --chromium PATH)")
    return found


def build(runs: Path) -> Path:
    """Two finished two-epoch digits runs (different learning rates), a failed one and a foreign folder."""
    for name, lr in (("slow", "0.003"), ("fast", "0.03")):
        assert cli(["fit", "--data", "digits", "--epochs", "2", "--width", "8", "--batch-size", "128",
                    "--lr", lr, "--no-baselines", "--device", "cpu", "--threads", "1", "--seed", "1",
                    "--quiet", "--out", str(runs / name)]) == 0
    failed = prepare_run_dir(runs / "failed", resume=False, overwrite=False, quiet=True)
    abandon_run(failed, RuntimeError("the data source vanished while reading"))
    (runs / "notes").mkdir()
    (runs / "notes" / "todo.txt").write_text("try a wider cnn\n")
    assert cli(["runs", str(runs), "--html"]) == 0
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


def check_page(browser: str, folder: Path, work: Path) -> dict:
    """The page's own script sorts, raises nothing, decodes its curves, loads nothing, never scrolls sideways."""
    page = (folder / INDEX).read_text(encoding="utf-8")
    # Self-contained: no reference out of the page (links to the runs' reports are relative).
    assert not re.search(r'(src|href)\s*=\s*"(https?:|//|file:)', page)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    probe = folder / "probe.html"  # next to index.html, so the report links resolve the same way
    probe.write_text(page.replace("<head>", "<head>" + CATCH, 1).replace("</body>", PROBE + "</body>", 1),
                     encoding="utf-8")
    dom = headless(browser, work / "profile", "--dump-dom", probe.as_uri()).stdout
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
    return seen


def check_screenshot(browser: str, folder: Path, work: Path, shot: Path) -> dict:
    """Neither blank nor a block of colour, and both runs' curves drawn inside the window."""
    done = headless(browser, work / "profile-shot", f"--screenshot={shot}", (folder / INDEX).as_uri())
    assert shot.is_file() and shot.stat().st_size > 20_000, done.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == tuple(int(n) for n in WINDOW.split(","))
    pixels = np.asarray(image, dtype=np.int16).reshape(-1, 3)
    ink = float((pixels.sum(axis=1) < 600).mean())
    assert 0.01 < ink < 0.5, ink  # text and lines on a white page: neither blank nor a block of colour
    assert len(np.unique(pixels.astype(np.int32) @ np.array([65536, 256, 1]))) > 100  # distinct colours
    found = {}
    for colour in CURVE_COLOURS:  # both runs' curves drawn, inside the window
        near = int((np.abs(pixels - np.array(colour)).sum(axis=1) < 60).sum())
        assert near > 200, (colour, near)
        found[str(colour)] = near
    return {"ink": ink, "curve_pixels": found, "bytes": shot.stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chromium", default=None, help="the browser (default: the first Chromium on PATH)")
    parser.add_argument("--screenshot", type=Path, default=None, help="also keep the screenshot here")
    parser.add_argument("--results", type=Path, default=None)
    options = parser.parse_args()
    browser = chromium(options.chromium)
    version = subprocess.run([browser, "--version"], capture_output=True, text=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="index-browser-"))
    folder = build(work / "runs")
    seen = check_page(browser, folder, work)
    shot = options.screenshot or work / "index.png"
    picture = check_screenshot(browser, folder, work, shot)
    print(f"{version}: every check passed; screenshot {shot}", file=sys.stderr)
    write_results(options.results or result_path(__file__, 1), {"browser": version, "probe": seen,
                                                               "screenshot": {"path": str(shot), **picture}}, 1)


if __name__ == "__main__":
    main()
