"""`snakemake --report` of a finished demo run holds every figure with its caption,
and the report renders them in headless Chromium (screenshots checked non-blank)."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import TEST_CONFIG, chromium_screenshot

pytestmark = pytest.mark.slow

# Globs (relative to the run folder) of the outputs the report must show; each must
# match at least one file of the finished run, and every match must be in the report.
REPORT_FILES = [
    "results/subj0*/reconstruction/grid.png",
    "results/evaluation/metrics.png",
    "results/evaluation/metrics.md",
    "results/subj0*/encoding/*_maps/*.png",
]

# Appended to a copy of the report: open one result in the report's own image view
# (what a click on its eye button does), once the page has rendered.
SHOW_RESULT = """
<script>
window.addEventListener("load", () => setTimeout(() => {{
    const path = {path};
    app.setView({{content: {content}, contentPath: results[path].data_uri, resultPath: path}});
}}, 200));
</script>
"""
# The report's own views by MIME type; other results are offered as downloads.
VIEWS = {"image/png": "img", "image/jpeg": "img", "image/svg+xml": "img",
         "text/html": "html", "application/pdf": "pdf"}


def embedded_results(html: str) -> dict[str, dict]:
    """The `var results = {...};` object the report embeds: {path: entry}."""
    match = re.search(r"var results = (\{.*?\});\n", html, re.S)
    assert match, "no results object in the report"
    return json.loads(match.group(1))


def decode_data_uri(uri: str) -> bytes:
    header, _, data = uri.partition(",")
    assert header.endswith(";base64"), header[:80]
    return base64.b64decode(data)


def is_blank(png: Path) -> bool:
    """True if the image is (nearly) one colour."""
    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.float32)[::4, ::4]
    return float(pixels.std()) < 5.0 or len(np.unique(pixels.reshape(-1, 3), axis=0)) < 20


@pytest.fixture(scope="module")
def report(demo_run, tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    out = tmp_path_factory.mktemp("report") / "report.html"
    demo_run.snakemake("--report", str(out))
    return out, embedded_results(out.read_text())


def test_report_holds_every_figure_with_a_caption(demo_run, report):
    _, results = report
    for pattern in REPORT_FILES:
        files = sorted(demo_run.workdir.glob(pattern))
        assert files, f"the demo run wrote no {pattern}"
        for f in files:
            rel = str(f.relative_to(demo_run.workdir))
            assert rel in results, f"{rel} is not in the report (flag it with report(...))"
            entry = results[rel]
            assert re.sub(r"<[^>]+>", "", entry["caption"] or "").strip(), f"{rel}: no caption"
            data = decode_data_uri(entry["data_uri"])
            assert data == f.read_bytes(), f"{rel}: the report embeds other data"
            if rel.endswith(".png"):
                png = Path(str(f) + ".check.png")
                png.write_bytes(data)
                assert not is_blank(png), f"{rel} is blank"
                png.unlink()
    # the run's configuration is on the report's start page (workflow.rst), e.g. the
    # test run's own synthetic.trials_per_session and a default the config files omit
    html = report[0].read_text()
    assert f"trials_per_session={TEST_CONFIG['synthetic']['trials_per_session']}" in html
    assert "coco_annotations_url=" in html
    # the metrics page says which sessions each subject's numbers come from
    md = demo_run.path("results/evaluation/metrics.md").read_text()
    assert "## Sessions used" in md and "Sessions excluded" not in md


def test_report_renders_in_headless_chromium(report, tmp_path):
    html, results = report
    shots = {"report": (html, tmp_path / "report.png")}
    shown = [p for p in results if results[p]["mime_type"] in VIEWS]
    assert shown
    # one result of each kind (first match of each pattern), shown in the report's viewer
    for pattern in REPORT_FILES:
        match = next((p for p in shown if Path(p).match(pattern)), None)
        if match is None:
            continue
        view = tmp_path / f"{Path(match).parent.name}_{Path(match).stem}.html"
        content = json.dumps(VIEWS[results[match]["mime_type"]])
        view.write_text(html.read_text() + SHOW_RESULT.format(path=json.dumps(match), content=content))
        shots[match] = (view, view.with_suffix(".png"))
    for name, (page, png) in shots.items():
        proc = chromium_screenshot(page, png, tmp_path / "chromium-profile")
        assert png.exists(), f"no screenshot of {name}:\n{proc.stderr[-2000:]}"
        assert not is_blank(png), f"the screenshot of {name} is blank: {png}"
    # the screenshots of single figures differ from the landing page: the figure shows
    landing = np.asarray(Image.open(shots["report"][1]).convert("RGB"))
    for name, (_, png) in shots.items():
        if name != "report":
            shot = np.asarray(Image.open(png).convert("RGB"))
            assert shot.shape != landing.shape or np.abs(shot.astype(int) - landing).mean() > 1, name
