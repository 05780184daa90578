"""Diagnostic figures: one panel per model, size and percent axes, the workbench template."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mrl_analysis.diagnostic.headlines import verdict_row, verdicts
from mrl_analysis.diagnostic.plots import (
    quality_figure,
    renormalization_figure,
    shares_figure,
    verdict_figure,
)
from mrl_analysis.diagnostic.prefixes import prefix_quality
from mrl_analysis.diagnostic.shares import energy_shares
from mrl_analysis.figures.save import save_figure


@pytest.fixture(scope="module")
def tables():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 600)
    x = rng.normal(size=(600, 16)).astype(np.float32)
    x[:, :3] += rng.normal(size=(4, 3))[labels] * 3
    quality, shares, rows = [], [], []
    for name in ("A", "B", "C"):
        pq = prefix_quality(
            x[:500], labels[:500], x[500:], labels[500:], [2, 4, 8], n_boot=100, progress=False
        )
        quality.append(pq.table(name))
        shares.append(energy_shares(x[500:], pq.sizes, model=name, n_boot=100))
        rows.append(verdict_row(name, pq, small_max=4))
    return pd.concat(quality), pd.concat(shares), verdicts(rows)


def test_quality_figure(tables, tmp_path):
    quality, _, _ = tables
    fig = quality_figure(quality, "map", "toy")
    assert [a.text for a in fig.layout.annotations] == ["A", "B", "C"]  # a panel per model
    assert fig.layout.xaxis.type == "log" and list(fig.layout.xaxis.tickvals) == [2, 4, 8, 16]
    assert list(fig.layout.xaxis.ticktext) == ["2", "4", "8", "16"]
    assert fig.layout.yaxis.tickformat.endswith("%") and fig.layout.yaxis.title.text == "mAP@10"
    assert fig.layout.template.layout.font.size == 13 and fig.layout.width is None
    named = {t.name for t in fig.data if t.showlegend}
    assert named == {"first m dims", "top-m PCA dims", "m random dims", "full embedding"}
    prefix = next(t for t in fig.data if t.name == "first m dims")
    want = quality[
        (quality.model == "A") & (quality.metric == "map") & (quality.variant == "prefix")
    ]
    np.testing.assert_allclose(prefix.y, want.sort_values("truncate_dim")["value"])
    knn = quality_figure(quality, "knn")
    assert knn.layout.yaxis.title.text == "1-NN accuracy"
    with pytest.raises(ValueError, match="no rows of metric"):
        quality_figure(quality, "recall")
    written = save_figure(fig, quality, "quality", tmp_path, formats=("html",))
    assert written["html"].exists() and len(pd.read_csv(written["csv"])) == len(quality)


def test_renormalization_shares_and_verdict_figures(tables):
    quality, shares, table = tables
    renorm = renormalization_figure(quality)
    assert {t.name for t in renorm.data if t.showlegend} == {
        "first m dims",
        "first m dims, not renormalized",
        "full embedding",
    }
    fig = shares_figure(shares)
    assert [a.text for a in fig.layout.annotations][:3] == [
        "Share of the squared norm",
        "Share of the variance",
        "Samples whose first m dims are all 0",
    ]
    assert fig.layout.yaxis.tickformat.endswith("%")
    verdict = verdict_figure(table)
    assert [t.name for t in verdict.data] == ["first m dims vs PCA", "first m dims vs random dims"]
    np.testing.assert_allclose(verdict.data[0].x, table["vs_pca"])
    assert verdict.layout.xaxis.tickformat.endswith("%")
