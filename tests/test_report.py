"""report.html: parses, embeds every figure once, escapes config values; renders in Chromium."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_experiments_helpers import inline_sweeps

from nclab.cli import main
from nclab.report import render_report, write_manifest
from nclab.report.render import MANIFEST


def _png(path: Path, color: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [0, 1], color=color)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.tags: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")
        if tag == "script":
            self.scripts += 1


def _reproduction_dir(root: Path) -> tuple[Path, list[Path]]:
    figs = [_png(root / "figures" / "a.png", "red"), _png(root / "figures" / "b.png", "blue")]
    (root / "summary.csv").write_text("loss,nc1_mean\n<script>alert(1)</script>,0.5\nls,0.25\n")
    write_manifest(
        root,
        {
            "name": "test-repro",
            "preset": "smoke",
            "paper": "A & B, <b>bold</b> paper",
            "reproduces": "Figure 1",
            "prediction": "NC1 falls",
            "spec": {"set": {"loss.name": "<script>alert('x')</script>"}},
            "figures": [["figures/a.png", "caption a <i>"], ["figures/b.png", "caption b"]],
            "tables": ["summary.csv"],
            "summary": "summary.csv",
            "summary_columns": ["loss", "nc1_mean"],
            "notes": ["does not show at this scale"],
            "wall_seconds": 12.0,
            "environment": {"torch": "x"},
        },
    )
    return root, figs


def test_report_parses_embeds_each_figure_once_and_escapes(tmp_path: Path) -> None:
    root, figs = _reproduction_dir(tmp_path / "r")
    html = render_report(root).read_text()
    parser = _Collect()
    parser.feed(html)
    parser.close()
    assert parser.tags[0] == "html" and "body" in parser.tags
    # Each figure file's bytes appear exactly once, as the data URI of one <img>.
    assert len(parser.images) == len(figs)
    for fig in figs:
        encoded = base64.b64encode(fig.read_bytes()).decode()
        assert parser.images.count(f"data:image/png;base64,{encoded}") == 1
        assert html.count(encoded) == 1
    # The only script is the template's own sorter: every value from a config is text.
    assert parser.scripts == 1
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "caption a &lt;i&gt;" in html
    assert "does not show at this scale" in html and str(root / "summary.csv") in html
    assert "12 s" in html  # the wall time


def test_report_of_a_training_run_and_a_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nclab.sweep import parse_spec, run_sweep

    inline_sweeps(monkeypatch)
    spec = parse_spec(
        {
            "base": "smoke",
            "grid": {"loss.name": ["ce"]},
            "set": {"optim.epochs": 1, "data.per_class": 10, "data.test_per_class": 5},
        },
        tmp_path,
    )
    result = run_sweep(spec, tmp_path / "sw", max_parallel=2)
    assert not result.failed
    _png(tmp_path / "sw" / "nc1_vs_loss.name.png", "green")
    html = render_report(tmp_path / "sw").read_text()
    assert html.count("data:image/png;base64,") == 1 and "summary.csv" in html
    run = next((tmp_path / "sw" / "trials").iterdir())
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    encoded = base64.b64encode((run / "metrics.png").read_bytes()).decode()
    assert html.count(encoded) == 1 and "metrics.csv" in html
    assert "epochs: 1" in html  # the run's config.yaml is shown


def test_report_refuses_a_directory_that_is_none_of_the_three(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nclab report: error: DIR:") and MANIFEST in err
    assert not (tmp_path / "report.html").exists()


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="needs chromium on PATH (apt-get install chromium)"
)
def test_report_images_decode_in_headless_chromium(tmp_path: Path) -> None:
    root, figs = _reproduction_dir(tmp_path / "r")
    html = render_report(root).read_text()
    # An inline probe writes each image's naturalWidth into the DOM once the page has loaded.
    probe = (
        "<script>window.addEventListener('load',function(){var d=document.createElement('pre');"
        "d.id='probe';d.textContent=JSON.stringify(Array.from(document.images).map("
        "function(i){return [i.complete,i.naturalWidth];}));document.body.appendChild(d);});"
        "</script></body>"
    )
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", probe))
    done = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout)
    assert found is not None, done.stdout[-2000:]
    sizes = json.loads(found.group(1).replace("&quot;", '"'))
    assert len(sizes) == len(figs)
    assert all(complete and width == 200 for complete, width in sizes)  # 2 in x 100 dpi
