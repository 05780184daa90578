"""Summaries of a retrieval table: speed-ups, views for reading, and the headlines.

Everything here takes the tidy table of :mod:`mrl_analysis.retrieval.tables` (values are
fractions in ``[0, 1]``) and returns a small table:

* :func:`as_accurate_speedup`: the cheapest adaptive or funnel configuration as accurate as
  single-shot at a reference size, within ``tolerance`` (a fraction: 0.01 is one point),
  through the library's one rule :func:`~mrl_analysis.core.sizes.cheapest_within`;
* views of one measure: per size (:func:`single_shot_by_size`, :func:`metrics_by_size`),
  the adaptive ``(Ds, Dr)`` grid, funnels, the shortlist ablation and single-shot cost;
* :func:`retrieval_headlines`: every number notebook 06 states in prose, with its sentence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from mrl_analysis.core.checks import check_fraction
from mrl_analysis.core.sizes import cheapest_within
from mrl_analysis.retrieval.metrics import metric_label
from mrl_analysis.retrieval.tables import select

__all__ = [
    "HEADLINE_COLUMNS",
    "ablation_summary",
    "adaptive_grid",
    "as_accurate_speedup",
    "funnel_summary",
    "headline_text",
    "metrics_by_size",
    "retrieval_headlines",
    "single_shot_by_size",
    "single_shot_cost",
    "speedup_table",
]

HEADLINE_COLUMNS: list[str] = ["headline", "model", "measure", "value", "text"]
_SPEEDUP_KEYS = ["method", "Ds", "Dr", "K", "cascade", "value", "mflops_per_query", "ms_per_query"]


def as_accurate_speedup(
    table: pd.DataFrame,
    metric: str = "map",
    k: int = 10,
    *,
    reference_dim: int | None = None,
    tolerance: float = 0.0,
    methods: Sequence[str] = ("adaptive", "funnel"),
) -> pd.DataFrame:
    """The cheapest configuration as accurate as single-shot at ``reference_dim``.

    Per ``(model, index)``: the reference is the single-shot row at ``reference_dim``
    (default: the largest single-shot size); among rows of ``methods`` whose value is at
    least the reference's minus ``tolerance`` (a fraction, like the values), the one with
    the fewest MFLOPs/query (then the fastest). ``flops_ratio`` and ``speed_ratio`` say how
    many times cheaper and faster than the reference it is. Groups where nothing qualifies
    are left out.
    """
    tolerance = check_fraction(tolerance, "tolerance")
    sel = select(table, metric, k)
    rows = []
    for (model, index), group in sel.groupby(["model", "index"], sort=False):
        single = group[group["method"] == "single-shot"]
        if single.empty:
            continue
        ref_dim = int(single["Ds"].max()) if reference_dim is None else int(reference_dim)
        ref = single[single["Ds"] == ref_dim]
        if ref.empty:
            raise ValueError(f"no single-shot row at Ds={ref_dim} for model {model!r}")
        ref = ref.iloc[0]
        # Cost is MFLOPs, then measured time: sorted so, the first of equal MFLOPs wins.
        cand = group[group["method"].isin(methods)].sort_values(
            ["mflops_per_query", "ms_per_query"], kind="stable"
        )
        if cand.empty:
            continue
        pick = int(
            cheapest_within(
                cand["value"].to_numpy(np.float64),
                cand["mflops_per_query"].to_numpy(np.float64),
                float(ref["value"]),
                tolerance,
            )
        )
        if pick < 0:
            continue
        best = cand.iloc[pick]
        rows.append(
            {
                "model": model,
                "index": index,
                "metric": metric,
                "k": int(best["k"]),
                "reference_Ds": ref_dim,
                "reference_value": ref["value"],
                "reference_mflops": ref["mflops_per_query"],
                "reference_ms": ref["ms_per_query"],
                **{key: best[key] for key in _SPEEDUP_KEYS},
                "flops_ratio": ref["mflops_per_query"] / best["mflops_per_query"],
                "speed_ratio": ref["ms_per_query"] / best["ms_per_query"],
            }
        )
    return pd.DataFrame(rows)


def speedup_table(
    table: pd.DataFrame, measures: Sequence[tuple[str, int]], *, tolerance: float = 0.0
) -> pd.DataFrame:
    """:func:`as_accurate_speedup` for each ``(metric, k)`` of ``measures``, stacked."""
    pairs = list(dict.fromkeys((m, 1 if m == "top1" else int(k)) for m, k in measures))
    frames = [as_accurate_speedup(table, m, k, tolerance=tolerance) for m, k in pairs]
    return pd.concat([f for f in frames if len(f)] or [pd.DataFrame()], ignore_index=True)


def single_shot_by_size(
    table: pd.DataFrame,
    metric: str = "map",
    k: int = 10,
    *,
    families: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Single-shot ``metric@k`` per size (rows) and model (columns).

    ``families`` maps models to a column name: FF-k models mapped to one ``"FF"`` column
    compare each model trained for size ``k`` with the nested models truncated to ``k``.
    """
    sel = select(table, metric, k)
    sel = sel[sel["method"] == "single-shot"]
    line = sel["model"].map(lambda m: (families or {}).get(m, m))
    out = sel.assign(line=line).pivot_table(index="Ds", columns="line", values="value", sort=False)
    out.columns.name = metric_label(metric, k)
    return out.sort_index()


def metrics_by_size(table: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    """Every single-shot metric at every ``k`` of ``models``, one row per model and size."""
    sel = table[(table["method"] == "single-shot") & table["model"].isin(list(models))]
    measure = [metric_label(m, k) for m, k in zip(sel["metric"], sel["k"], strict=True)]
    return sel.assign(measure=measure).pivot_table(
        index=["model", "Ds"], columns="measure", values="value", sort=False
    )


def adaptive_grid(
    table: pd.DataFrame, model: str, metric: str = "map", k: int = 10
) -> pd.DataFrame:
    """Adaptive ``metric@k`` of ``model`` per ``Ds`` (rows) and ``Dr`` (columns), with the
    single-shot value at ``Ds`` as the last column."""
    sel = select(table, metric, k)
    sel = sel[sel["model"] == model]
    grid = sel[sel["method"] == "adaptive"].pivot_table(index="Ds", columns="Dr", values="value")
    grid["single-shot"] = sel[sel["method"] == "single-shot"].set_index("Ds")["value"]
    grid.columns.name = f"{model}: {metric_label(metric, k)} by Dr"
    return grid


def _with_top1(table: pd.DataFrame, method: str, metric: str, k: int) -> pd.DataFrame:
    k_sel = 1 if metric == "top1" else int(k)
    sel = table[(table["method"] == method) & table["metric"].isin(["top1", metric])]
    sel = sel[sel["k"].isin([1, k_sel])]
    measure = [metric_label(m, q) for m, q in zip(sel["metric"], sel["k"], strict=True)]
    return sel.assign(measure=measure)


def funnel_summary(table: pd.DataFrame, metric: str = "map", k: int = 10) -> pd.DataFrame:
    """Top-1 and ``metric@k`` of every funnel, with its cost per query (paper Table 13)."""
    return _with_top1(table, "funnel", metric, k).pivot_table(
        index=["model", "cascade", "mflops_per_query", "ms_per_query"],
        columns="measure",
        values="value",
        sort=False,
    )


def ablation_summary(table: pd.DataFrame, metric: str = "map") -> pd.DataFrame:
    """Top-1 and ``metric`` at every ``k`` per model and shortlist length ``K``."""
    sel = table[(table["method"] == "shortlist-ablation") & table["metric"].isin(["top1", metric])]
    return sel.pivot_table(index=["model", "K"], columns=["metric", "k"], values="value")


def single_shot_cost(table: pd.DataFrame) -> pd.DataFrame:
    """MFLOPs and measured ms per query of single-shot search per size and model."""
    sel = table[(table["method"] == "single-shot") & (table["metric"] == "top1")]
    return sel.pivot_table(index="Ds", columns="model", values=["mflops_per_query", "ms_per_query"])


# ----------------------------------------------------------------------------- headlines


def _headline(key: str, model: str, measure: str, value: float, text: str) -> dict:
    return {"headline": key, "model": model, "measure": measure, "value": value, "text": text}


def _speedup_text(row: pd.Series, tolerance: float) -> str:
    how = f"{row['method']} Ds={row['Ds']}, Dr={row['Dr']}, K={row['K']}"
    if row["method"] == "funnel":
        how = f"funnel {row['cascade']}"
    return (
        f"**{row['model']}**, {metric_label(row['metric'], row['k'])}: {how} reaches "
        f"{row['value']:.2%} against {row['reference_value']:.2%} for single-shot at "
        f"d={row['reference_Ds']} (tolerance {100 * tolerance:.3g} points): "
        f"{row['flops_ratio']:.1f}× fewer MFLOPs ({row['mflops_per_query']:.3g} vs "
        f"{row['reference_mflops']:.3g}) and {row['speed_ratio']:.1f}× faster measured "
        f"({row['ms_per_query']:.3f} vs {row['reference_ms']:.3f} ms/query)."
    )


def retrieval_headlines(
    table: pd.DataFrame,
    models: pd.DataFrame,
    *,
    metric: str = "map",
    k: int = 10,
    tolerance: float = 0.0,
) -> pd.DataFrame:
    """The numbers notebook 06 states, one row each: columns :data:`HEADLINE_COLUMNS`.

    ``models`` is the study's per-model table (columns ``model``, ``database_items``,
    ``queries``, ``adaptive``). Headlines (``headline`` key):

    * ``queries``: queries per model (``value``) against the database, and the index;
    * ``as_accurate``: per model and measure (``metric@k``, then top-1), the MFLOPs ratio
      of :func:`as_accurate_speedup` (``value``), its sentence naming the configuration,
      both values, both costs and the measured speed-up; one row with value NaN when no
      configuration qualifies;
    * ``single_shot_cost``: per adaptive model, how many times the MFLOPs of the smallest
      single-shot size the largest needs (``value``), and the measured time ratio.
    """
    tolerance = check_fraction(tolerance, "tolerance")
    first = models.iloc[0]
    kinds = ", ".join(f"`{i}`" for i in table["index"].unique())
    rows = [
        _headline(
            "queries",
            "",
            "queries",
            int(first["queries"]),
            f"{int(first['queries']):,} queries against {int(first['database_items']):,} "
            f"database items, {kinds} index.",
        )
    ]
    speedups = speedup_table(table, [(metric, k), ("top1", 1)], tolerance=tolerance)
    for _, row in speedups.iterrows():
        label = metric_label(row["metric"], row["k"])
        text = _speedup_text(row, tolerance)
        rows.append(_headline("as_accurate", row["model"], label, row["flops_ratio"], text))
    if speedups.empty:
        text = "No adaptive or funnel configuration is as accurate."
        rows.append(_headline("as_accurate", "", "", math.nan, text))
    cost = table[(table["method"] == "single-shot") & (table["metric"] == "top1")]
    for name in models.loc[models["adaptive"].astype(bool), "model"]:
        own = cost[cost["model"] == name].set_index("Ds")
        small, big = int(own.index.min()), int(own.index.max())
        flops = own.loc[big, "mflops_per_query"] / own.loc[small, "mflops_per_query"]
        time_ratio = own.loc[big, "ms_per_query"] / own.loc[small, "ms_per_query"]
        text = (
            f"{name}: single-shot at d={big} needs {flops:.0f}× the MFLOPs of d={small} and "
            f"{time_ratio:.1f}× its measured time."
        )
        rows.append(_headline("single_shot_cost", name, "MFLOPs ratio", flops, text))
    return pd.DataFrame(rows, columns=HEADLINE_COLUMNS)


def headline_text(headlines: pd.DataFrame, key: str) -> str:
    """The sentences of headline ``key`` as Markdown: one sentence, or a bullet list."""
    texts = list(headlines.loc[headlines["headline"] == key, "text"])
    if not texts:
        raise ValueError(f"no headline {key!r}; keys: {sorted(headlines['headline'].unique())}")
    return texts[0] if len(texts) == 1 else "\n".join(f"* {t}" for t in texts)
