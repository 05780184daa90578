"""Few-shot and FLUID figures: traces, axes in percent and sizes, saving with their tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mrl_analysis.fewshot.episodes import fewshot_accuracy
from mrl_analysis.fewshot.fluid import CATEGORIES, evaluate_fluid
from mrl_analysis.fewshot.plots import (
    fewshot_figure,
    fluid_bars_figure,
    fluid_heatmap_figure,
    learning_curves_figure,
    saturation_figure,
)
from mrl_analysis.fewshot.stream import make_stream
from mrl_analysis.fewshot.summary import saturation_table
from mrl_analysis.figures.save import save_figure


def _blobs(n_per_class=20, n_classes=6, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, d)) * 2.0
    labels = np.repeat(np.arange(n_classes), n_per_class)
    return centers[labels] + rng.normal(size=(labels.size, d)), labels


@pytest.fixture(scope="module")
def fewshot():
    x, labels = _blobs()
    return pd.concat(
        [
            fewshot_accuracy(
                x,
                labels,
                [2, 4, 8],
                shots=(1, 3),
                ways=(3, None),
                n_episodes=8,
                queries=3,
                model=name,
                progress=False,
            )
            for name in ("MRL", "MRL-E", "FF-8")
        ]
    )


@pytest.fixture(scope="module")
def fluid():
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(8, 16))
    labels = rng.integers(0, 8, 2000)
    x = centers[labels] * 0.7 + 0.5 * rng.normal(size=(2000, 16))
    stream = make_stream(labels, [0, 1, 2, 3, 4], [5, 6, 7], seed=0)
    init_y = np.repeat(np.arange(5), 20)
    init_x = centers[init_y] * 0.7 + 0.5 * rng.normal(size=(100, 16))
    tables, curves = [], []
    for name, sizes in (("MRL", [2, 16]), ("FF-16", [16])):
        table, curve = evaluate_fluid(
            x,
            stream,
            sizes,
            init_features=init_x,
            init_labels=init_y,
            head_threshold=0.1,
            model=name,
            progress=False,
            points=20,
        )
        tables.append(table)
        curves.append(curve)
    return pd.concat(tables), pd.concat(curves)


def test_fewshot_figure(fewshot, tmp_path):
    fig = fewshot_figure(fewshot)
    # Per (ways, shots, line): a CI band and a line; FF-8 is the "FF" line at its one size.
    assert len(fig.data) == 2 * 2 * 3 * 2
    assert fig.layout.xaxis.type == "log" and list(fig.layout.xaxis.tickvals) == [2, 4, 8]
    assert fig.layout.yaxis.tickformat.endswith("%")
    assert fig.layout.template.layout.font.size == 13  # the workbench template
    # Responsive: no fixed width, so the figure fits the notebook or page it is shown in.
    assert fig.layout.width is None and fig.layout.height == 600
    band = next(t for t in fig.data if t.fill == "toself" and t.legendgroup is None)
    line = next(t for t in fig.data if t.name == "MRL, 1-shot")
    rows = fewshot[(fewshot.model == "MRL") & (fewshot.shots == 1) & (fewshot.ways == 3)]
    rows = rows.sort_values("truncate_dim")
    np.testing.assert_allclose(band.y, [*rows["ci_high"], *rows["ci_low"][::-1]])
    np.testing.assert_allclose(line.y, rows["accuracy"])
    assert {t.name for t in fig.data if t.showlegend} >= {"MRL, 1-shot", "FF, 3-shot"}
    band = fig.data[0]
    assert max(band.y) <= 1.5, "accuracies are fractions"
    only = fewshot_figure(fewshot, shots=[3])
    assert len(only.data) == 2 * 1 * 3 * 2
    with pytest.raises(ValueError, match="no rows with shots"):
        fewshot_figure(fewshot, shots=[7])
    written = save_figure(fig, fewshot, "fewshot", tmp_path, formats=("html",))
    assert written["html"].exists() and len(pd.read_csv(written["csv"])) == len(fewshot)


def test_saturation_figure(fewshot):
    sat = saturation_table(fewshot, tolerance=0.01)
    fig = saturation_figure(sat, "sat", tolerance=0.01)
    assert len(fig.data) == 2 * 3  # ways x lines (MRL, MRL-E, FF)
    assert fig.layout.yaxis.type == "log"
    # Ticks at the shot counts, not at every integer up to the largest one.
    assert list(fig.layout.xaxis.tickvals) == sorted(sat["shots"].unique())
    assert fig.layout.title.text == "sat (within 1.0 points)"
    assert fig.layout.template is not None and fig.layout.template.layout.font.size == 13
    with pytest.raises(ValueError, match="lacks columns"):
        saturation_figure(fewshot)


def test_fluid_figures(fluid, tmp_path):
    table, curves = fluid
    heat = fluid_heatmap_figure(table)
    assert len(heat.data) == 2  # one panel per line (MRL, FF)
    assert heat.data[0].zmax == 1 and np.nanmax(np.asarray(heat.data[0].z, float)) <= 1
    bars = fluid_bars_figure(table)
    assert len(bars.data) == 2 * len(CATEGORIES)
    assert bars.layout.yaxis.tickformat.endswith("%")
    # Error bars: the bootstrap interval over the stream's samples.
    first = bars.data[0]
    rows = table[(table.model == "MRL") & (table.category == CATEGORIES[0])]
    rows = rows.sort_values("truncate_dim")
    np.testing.assert_allclose(first.error_y.array, rows["ci_high"] - rows["accuracy"])
    np.testing.assert_allclose(first.error_y.arrayminus, rows["accuracy"] - rows["ci_low"])
    lines = learning_curves_figure(curves)
    assert len(lines.data) == 3 * 3  # groups x (MRL at 2 sizes + FF at one)
    assert lines.layout.yaxis.title.text == "Cumulative accuracy"
    written = save_figure(heat, table, "fluid-heatmap", tmp_path, formats=("html",))
    assert written["html"].exists() and written["csv"].exists()
