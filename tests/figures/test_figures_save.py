"""Figure saving: HTML + CSV written under their names, and choreographer's ignored pipe
messages kept out of notebook output."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest

from mrl_analysis.figures.save import _prepare_static_export, figure_dir, save_figure


def test_save_figure_writes_html_and_csv(tmp_path):
    table = pd.DataFrame({"x": [1, 2], "y": [3, 4]})
    written = save_figure(
        go.Figure(go.Scatter(x=table.x, y=table.y)), table, "f", tmp_path, ["html"]
    )
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[:2] == ["f.csv", "f.html"] and names[2].startswith("plotly-"), names
    assert written["csv"].read_text().splitlines() == ["x,y", "1,3", "2,4"]
    with pytest.raises(ValueError, match="unknown figure format 'jpg'"):
        save_figure(go.Figure(), None, "g", tmp_path, ["jpg"])
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_only_the_ignored_pipe_message_is_filtered(caplog, tmp_path):
    _prepare_static_export()
    _prepare_static_export()  # idempotent: one filter
    logger = logging.getLogger("choreographer.channels.pipe")
    assert len(logger.filters) == 1
    with caplog.at_level(logging.ERROR, logger=logger.name):
        logger.error("JSONError decoding message. Ignoring")
        logger.error("Chromium exited")
    assert [r.getMessage() for r in caplog.records] == ["Chromium exited"]


needs_chromium = pytest.mark.skipif(
    not any(Path(p).exists() for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser")),
    reason="PNG export needs a Chromium (apt-get install -y chromium)",
)


def _fresh_process(code: str, out: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter, after imports and a figure ``fig``, with ``out`` as
    its argument; it must succeed."""
    preamble = (
        "import sys, warnings, plotly.graph_objects as go\n"
        "from mrl_analysis.figures import save\n"
        "fig = go.Figure(go.Bar(x=[1], y=[2]))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", preamble + code, str(out)],
        check=True,
        timeout=90,
        capture_output=True,
        text=True,
    )


@needs_chromium
def test_png_export_in_a_fresh_process(tmp_path):
    # A fresh interpreter: the log filter is installed before kaleido has imported anything.
    # The first export is a one-shot Chromium, the later ones go through the one kept for the
    # process; all give the same image size, without warnings, and the process exits.
    run = _fresh_process(
        "warnings.simplefilter('error')\n"
        "for name in 'fg':\n"
        "    save.save_figure(fig, None, name, sys.argv[1], ['png'])\n"
        "    print(save._browser is not None)\n",
        tmp_path,
    )
    assert run.stdout.split() == ["True", "True"]
    one_shot, kept = ((tmp_path / f"{n}.png").read_bytes() for n in "fg")
    assert one_shot[:8] == kept[:8] == b"\x89PNG\r\n\x1a\n"
    assert one_shot[16:24] == kept[16:24]  # IHDR width and height


@needs_chromium
def test_a_kept_chromium_past_its_deadline_is_dropped_and_the_export_still_happens(tmp_path):
    run = _fresh_process(
        "save.RENDER_TIMEOUT = 1e-4  # no render is that fast: the kept browser times out\n"
        "for name in 'fgh':\n"
        "    save.save_figure(fig, None, name, sys.argv[1], ['png'])\n"
        "print(save._browser is None, save._browser_dropped)\n",
        tmp_path,
    )
    assert run.stdout.split() == ["True", "True"]
    assert run.stderr.count("kept Chromium dropped") == 1  # said once, then one-shot
    for name in "fgh":
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


CHROMIUM = Path("/usr/bin/chromium")


def test_html_pages_load_plotly_from_their_folder_not_a_cdn(tmp_path):
    fig = go.Figure(go.Bar(x=[1, 2], y=[3, 4]))
    save_figure(fig, None, "a", tmp_path, ["html"])
    save_figure(fig, None, "b", tmp_path, ["html"])
    bundles = list(tmp_path.glob("plotly-*.min.js"))
    assert len(bundles) == 1  # once per folder, not once per page
    assert "Plotly" in bundles[0].read_text()[:5000]
    for page in ("a.html", "b.html"):
        html = (tmp_path / page).read_text()
        assert "cdn" not in html.lower() and "https://" not in html
        assert f'src="{bundles[0].name}"' in html


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}")
def test_html_page_draws_offline(tmp_path):
    from playwright.sync_api import sync_playwright

    save_figure(go.Figure(go.Bar(x=[1, 2], y=[3, 4])), None, "f", tmp_path, ["html"])
    requested: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()

            def offline(route):  # the network is gone: only the page's own folder is there
                requested.append(route.request.url)
                if route.request.url.startswith("file://"):
                    route.continue_()
                else:
                    route.abort()

            page.route("**/*", offline)
            page.goto((tmp_path / "f.html").as_uri())
            page.wait_for_selector(".main-svg", timeout=20_000)  # plotly drew the figure
            assert page.locator(".bars path").count() == 2
        finally:
            browser.close()
    assert all(url.startswith("file://") for url in requested), requested


def test_figures_go_to_the_project_wherever_the_kernel_starts(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    for name in ("MRL_FIGURES_DIR", "MRL_PROJECT_ROOT", "JPY_SESSION_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(project / "notebooks")  # where JupyterLab starts a notebook's kernel
    assert figure_dir() == project / "figures"
    monkeypatch.setenv("JPY_SESSION_NAME", str(project / "notebooks" / "01_acc.ipynb"))
    assert figure_dir() == project / "figures" / "01_acc"
    monkeypatch.setenv("MRL_FIGURES_DIR", str(tmp_path / "run"))  # the runner's
    assert figure_dir() == tmp_path / "run"
    monkeypatch.delenv("MRL_FIGURES_DIR")
    assert figure_dir("mine") == Path("mine")
