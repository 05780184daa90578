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

from mrl_analysis.figures.save import _prepare_static_export, save_figure


def test_save_figure_writes_html_and_csv(tmp_path):
    table = pd.DataFrame({"x": [1, 2], "y": [3, 4]})
    written = save_figure(
        go.Figure(go.Scatter(x=table.x, y=table.y)), table, "f", tmp_path, ["html"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.csv", "f.html"]
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


@pytest.mark.skipif(
    not any(Path(p).exists() for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser")),
    reason="PNG export needs a Chromium (apt-get install -y chromium)",
)
def test_png_export_in_a_fresh_process(tmp_path):
    # A fresh interpreter: the log filter is installed before kaleido has imported anything.
    code = (
        "import sys, plotly.graph_objects as go\n"
        "from mrl_analysis.figures.save import save_figure\n"
        "save_figure(go.Figure(go.Bar(x=[1], y=[2])), None, 'f', sys.argv[1], ['png'])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=60)
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
