"""Summaries of a retrieval table: speed-ups, views for reading, and the headlines.

Everything here takes the tidy table of :mod:`mrl_analysis.retrieval.tables` (values are
fractions in ``[0, 1]``) and returns a small table:

* :func:`as_accurate_speedup`: the cheapest adaptive or funnel configuration as accurate as
  single-shot at a reference size, within ``tolerance`` (a fraction: 0.01 is one point),
  through the library's one rule :func:`~mrl_analysis.core.sizes.cheapest_within`;
* views of one measure: per size (:func:`single_shot_by_size`, :func:`metrics_by_size`),
  the adaptive ``(Ds, Dr)`` grid, funnels, the shortlist ablation and single-shot cost;
* the frontier: :func:`frontier_points` (one row per configuration: its time, bytes and
  quality, Pareto points marked by :func:`pareto_front`), :func:`frontier_summary` (the best
  adaptive pipeline against exact search and against the best faiss peer at equal recall)
  and :func:`frontier_line`, the sentence the benchmark ends with;
* :func:`retrieval_headlines`: every number notebook 06 states in prose, with its sentence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from mrl_analysis.core.checks import check_fraction, check_table
from mrl_analysis.core.sizes import as_good, cheapest_within
from mrl_analysis.retrieval.metrics import metric_label
from mrl_analysis.retrieval.tables import TABLE_COLUMNS, select

__all__ = [
    "HEADLINE_COLUMNS",
    "MRL_METHODS",
    "ablation_summary",
    "adaptive_grid",
    "as_accurate_speedup",
    "frontier_line",
    "frontier_points",
    "frontier_summary",
    "funnel_summary",
    "headline_text",
    "metrics_by_size",
    "pareto_front",
    "ratio_text",
    "retrieval_headlines",
    "single_shot_by_size",
    "single_shot_cost",
    "speedup_table",
]

HEADLINE_COLUMNS: list[str] = ["headline", "model", "measure", "value", "text"]
#: Methods that are MRL two-stage searches (shortlist at Ds, rerank at Dr).
MRL_METHODS: tuple[str, ...] = ("adaptive", "funnel", "shortlist-ablation", "pipeline")
_SPEEDUP_KEYS = [
    "method",
    "Ds",
    "Dr",
    "K",
    "cascade",
    "value",
    "ci_low",
    "ci_high",
    "mflops_per_query",
    "ms_per_query",
]


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
                "reference_ci_low": ref["ci_low"],
                "reference_ci_high": ref["ci_high"],
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


# ------------------------------------------------------------------------------ frontier

# One frontier point per configuration: the table's identifying columns and its costs.
_POINT_KEYS = [c for c in TABLE_COLUMNS if c not in ("metric", "k", "value", "ci_low", "ci_high")]


def pareto_front(cost: Sequence[float] | np.ndarray, quality: Sequence[float] | np.ndarray):
    """Which points no other point beats: none is at most as costly and at least as good
    while better in one of the two (of equal points, the first is kept). Boolean array."""
    c = np.asarray(cost, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if c.shape != q.shape or c.ndim != 1:
        raise ValueError(f"cost and quality must be 1-D of one length, got {c.shape}, {q.shape}")
    order = np.lexsort((-q, c))  # cheapest first; of equal cost, the best first
    best_before = np.maximum.accumulate(np.concatenate([[-np.inf], q[order][:-1]]))
    front = np.zeros(len(c), dtype=bool)
    front[order] = q[order] > best_before
    return front


def _family(row: pd.Series) -> str:
    """The figure's legend group of a configuration."""
    if row["method"] == "exact":
        return "exact single-shot"
    if row["method"] == "single-shot":
        return "single-shot (prefix)"
    if row["method"] == "peer":
        return f"faiss {row['config'].split()[0]}"
    return f"MRL, {row['index']} shortlist"


def _point_label(row: pd.Series) -> str:
    if row["method"] == "peer":
        return f"faiss {row['config']}"
    if row["method"] in ("exact", "single-shot"):
        return f"{row['method']} d={row['Ds']} ({row['config']})"
    if row["method"] == "funnel":
        return f"funnel {row['cascade']} ({row['config']})"
    return f"{row['index']} Ds={row['Ds']}→Dr={row['Dr']} K={row['K']} ({row['config']})"


def frontier_points(
    table: pd.DataFrame,
    model: str | None = None,
    *,
    k: int = 10,
    methods: Sequence[str] = ("exact", "single-shot", *MRL_METHODS, "peer"),
) -> pd.DataFrame:
    """One row per configuration of ``methods`` for ``model`` (default: the only one): its
    keys and costs, ``family`` and ``label`` (for figures), and ``top1``, ``map`` (mAP@k),
    ``nn_recall`` (k-NN recall@k against exact full-size neighbours), each with
    ``*_low`` / ``*_high`` interval columns (NaN where the table has no such row). Pareto
    flags: ``pareto_ms`` and ``pareto_bytes`` for NN recall@k against ms/query and
    bytes/vector.
    """
    columns = ["metric", "k", "value", "ms_per_query", "bytes_per_vector"]
    check_table(table, columns, "evaluate_retrieval or frontier_table")
    models = table["model"].unique()
    if model is None:
        if len(models) != 1:
            raise ValueError(f"the table holds several models {list(models)}: pass model=")
        model = models[0]
    sel = table[(table["model"] == model) & table["method"].isin(list(methods))]
    if sel.empty:
        raise ValueError(f"no rows of {list(methods)} for model {model!r}")
    k = int(k)
    keep = ((sel["metric"] == "top1") & (sel["k"] == 1)) | (
        sel["metric"].isin(["map", "nn_recall"]) & (sel["k"] == k)
    )
    sel = sel[keep]
    # One id per configuration: its keys, NA included (single-shot rows have no Dr or K).
    sel = sel.assign(config_id=sel.groupby(_POINT_KEYS, dropna=False, sort=False).ngroup())
    out = sel.drop_duplicates("config_id").set_index("config_id")[_POINT_KEYS]
    for metric in ("top1", "map", "nn_recall"):
        rows = sel[sel["metric"] == metric].set_index("config_id")
        for stat, suffix in (("value", ""), ("ci_low", "_low"), ("ci_high", "_high")):
            out[metric + suffix] = rows[stat].reindex(out.index).astype(np.float64)
    out = out.dropna(subset=["top1"]).reset_index(drop=True)
    out["family"] = out.apply(_family, axis=1)
    out["label"] = out.apply(_point_label, axis=1)
    recall = out["nn_recall"].fillna(-np.inf).to_numpy()
    out["pareto_ms"] = pareto_front(out["ms_per_query"].to_numpy(), recall)
    out["pareto_bytes"] = pareto_front(out["bytes_per_vector"].to_numpy(), recall)
    return out


def frontier_summary(
    table: pd.DataFrame,
    *,
    k: int = 10,
    top1_tolerance: float = 0.005,
    map_tolerance: float = 0.01,
) -> pd.DataFrame:
    """The frontier in one row per model with an ``exact`` run (:func:`frontier_table`):

    * **best adaptive**: the fastest MRL configuration (methods :data:`MRL_METHODS`) whose
      top-1 and mAP@``k`` are as good as exact single-shot at full size within
      ``top1_tolerance`` and ``map_tolerance`` (fractions; the rule of
      :mod:`mrl_analysis.core.sizes`, applied to both): ``best``, ``best_ms``,
      ``best_bytes``, ``speedup_vs_exact`` (exact ms / best ms), ``top1_delta`` and
      ``map_delta`` (best − exact, fractions) and ``recall`` = its NN recall@``k``;
    * **best faiss peer at equal recall**: the fastest peer configuration whose NN
      recall@``k`` is at least ``recall``: ``peer``, ``peer_ms``, ``peer_recall``,
      ``peer_bytes`` and ``speedup_vs_peer`` (peer ms / best ms).

    Values are NaN (labels empty) where nothing qualifies.
    """
    top1_tolerance = check_fraction(top1_tolerance, "top1_tolerance")
    map_tolerance = check_fraction(map_tolerance, "map_tolerance")
    rows = []
    for model in table.loc[table["method"] == "exact", "model"].unique():
        pts = frontier_points(table, model, k=k)
        ref = pts[pts["method"] == "exact"].iloc[0]
        row = {
            "model": model,
            "k": int(k),
            "reference_ms": ref["ms_per_query"],
            "reference_bytes": ref["bytes_per_vector"],
            "reference_top1": ref["top1"],
            "reference_map": ref["map"],
            "best": "",
            "peer": "",
        }
        mrl = pts[pts["method"].isin(MRL_METHODS)]
        good = as_good(mrl["top1"], ref["top1"], top1_tolerance) & as_good(
            mrl["map"], ref["map"], map_tolerance
        )
        # cheapest_within needs candidates: without MRL (or peer) rows there is no answer.
        ms = mrl["ms_per_query"]
        pick = int(cheapest_within(good.astype(np.float64), ms, 1.0)) if len(mrl) else -1
        if pick >= 0:
            best = mrl.iloc[pick]
            row.update(
                best=best["label"],
                best_ms=best["ms_per_query"],
                best_bytes=best["bytes_per_vector"],
                best_top1=best["top1"],
                best_map=best["map"],
                recall=best["nn_recall"],
                speedup_vs_exact=ref["ms_per_query"] / best["ms_per_query"],
                top1_delta=best["top1"] - ref["top1"],
                map_delta=best["map"] - ref["map"],
            )
            peers = pts[pts["method"] == "peer"]
            recall, ms = peers["nn_recall"], peers["ms_per_query"]
            at = int(cheapest_within(recall, ms, best["nn_recall"])) if len(peers) else -1
            if at >= 0:
                peer = peers.iloc[at]
                row.update(
                    peer=peer["label"],
                    peer_ms=peer["ms_per_query"],
                    peer_recall=peer["nn_recall"],
                    peer_bytes=peer["bytes_per_vector"],
                    speedup_vs_peer=peer["ms_per_query"] / best["ms_per_query"],
                )
        rows.append(row)
    columns = [
        "model",
        "k",
        "reference_ms",
        "reference_bytes",
        "reference_top1",
        "reference_map",
        "best",
        "best_ms",
        "best_bytes",
        "best_top1",
        "best_map",
        "recall",
        "speedup_vs_exact",
        "top1_delta",
        "map_delta",
        "peer",
        "peer_ms",
        "peer_recall",
        "peer_bytes",
        "speedup_vs_peer",
    ]
    return pd.DataFrame(rows).reindex(columns=columns)


def frontier_line(row: pd.Series | Mapping) -> str:
    """The benchmark's closing sentence for one row of :func:`frontier_summary`:
    ``frontier: best adaptive X× vs exact (top-1 Δ Y pt), Z× vs best faiss peer at
    recall@10 R`` (a ratio below 1 reads as such: ``0.8×``)."""
    k = int(row["k"])
    if not row["best"]:
        return "frontier: no adaptive pipeline is within the tolerances of exact search"
    head = (
        f"frontier: best adaptive {row['speedup_vs_exact']:.1f}× vs exact "
        f"(top-1 Δ {100 * row['top1_delta']:+.2f} pt)"
    )
    if not row["peer"]:
        return f"{head}, no faiss peer reaches its recall@{k} {row['recall']:.3f}"
    return (
        f"{head}, {row['speedup_vs_peer']:.1f}× vs best faiss peer at recall@{k} "
        f"{row['recall']:.3f}"
    )


# ----------------------------------------------------------------------------- headlines


def _headline(key: str, model: str, measure: str, value: float, text: str) -> dict:
    return {"headline": key, "model": model, "measure": measure, "value": value, "text": text}


def ratio_text(ratio: float, better: str, worse: str) -> str:
    """A ratio "reference / candidate" as a sentence part true in both directions:
    ``"16.0× faster"`` at 1 or above, ``"1.3× slower"`` below 1.

    ``better`` / ``worse`` are the words for a ratio above / below 1 (e.g. ``"faster"`` /
    ``"slower"``, ``"fewer"`` / ``"more"``).
    """
    if not math.isfinite(ratio) or ratio <= 0:
        return f"not comparable ({better})"
    return f"{ratio:.1f}× {better}" if ratio >= 1 else f"{1 / ratio:.1f}× {worse}"


def _with_interval(value: float, low: float, high: float) -> str:
    """``"65.10%"``, with ``" [64.20%, 66.00%]"`` when the interval is known."""
    if any(pd.isna(v) for v in (low, high)):
        return f"{value:.2%}"
    return f"{value:.2%} [{low:.2%}, {high:.2%}]"


def _speedup_text(row: pd.Series, tolerance: float) -> str:
    how = f"{row['method']} Ds={row['Ds']}, Dr={row['Dr']}, K={row['K']}"
    if row["method"] == "funnel":
        how = f"funnel {row['cascade']}"
    value = _with_interval(row["value"], row["ci_low"], row["ci_high"])
    ref = _with_interval(row["reference_value"], row["reference_ci_low"], row["reference_ci_high"])
    return (
        f"**{row['model']}**, {metric_label(row['metric'], row['k'])}: {how} reaches "
        f"{value} against {ref} for single-shot at d={row['reference_Ds']} (tolerance "
        f"{100 * tolerance:.3g} points): {ratio_text(row['flops_ratio'], 'fewer', 'more')} "
        f"MFLOPs ({row['mflops_per_query']:.3g} vs {row['reference_mflops']:.3g}) and "
        f"{ratio_text(row['speed_ratio'], 'faster', 'slower')} measured "
        f"({row['ms_per_query']:.3f} vs {row['reference_ms']:.3f} ms/query)."
    )


def retrieval_headlines(
    table: pd.DataFrame,
    models: pd.DataFrame,
    *,
    metric: str = "map",
    k: int = 10,
    tolerance: float = 0.0,
    top1_tolerance: float = 0.005,
    map_tolerance: float = 0.01,
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
      single-shot size the largest needs (``value``), and the measured time ratio;
    * ``frontier``: per model with a frontier run, the measured speed-up of the best
      adaptive pipeline over exact search (``value``; :func:`frontier_summary` with
      ``top1_tolerance`` and ``map_tolerance``, mAP at ``k``), its bytes per vector, and how
      it compares with the fastest faiss peer at its NN recall@``k``.
    """
    tolerance = check_fraction(tolerance, "tolerance")
    first = models.iloc[0]
    kinds = ", ".join(
        f"`{i}`" for i in table.loc[table["method"] == "single-shot", "index"].unique()
    )
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
        if own.empty:
            continue
        small, big = int(own.index.min()), int(own.index.max())
        flops = own.loc[big, "mflops_per_query"] / own.loc[small, "mflops_per_query"]
        time_ratio = own.loc[big, "ms_per_query"] / own.loc[small, "ms_per_query"]
        text = (
            f"{name}: single-shot at d={big} needs {flops:.0f}× the MFLOPs of d={small} and "
            f"{time_ratio:.1f}× its measured time."
        )
        rows.append(_headline("single_shot_cost", name, "MFLOPs ratio", flops, text))
    if (table["method"] == "exact").any():
        summary = frontier_summary(
            table, k=k, top1_tolerance=top1_tolerance, map_tolerance=map_tolerance
        )
        for _, row in summary.iterrows():
            text = _frontier_text(row, top1_tolerance, map_tolerance)
            rows.append(
                _headline(
                    "frontier", row["model"], "speed-up vs exact", row["speedup_vs_exact"], text
                )
            )
    return pd.DataFrame(rows, columns=HEADLINE_COLUMNS)


def _frontier_text(row: pd.Series, top1_tolerance: float, map_tolerance: float) -> str:
    within = (
        f"within {100 * top1_tolerance:.3g} points of exact top-1 and "
        f"{100 * map_tolerance:.3g} of its mAP@{row['k']}"
    )
    if not row["best"]:
        return f"**{row['model']}**: no MRL pipeline is {within}."
    text = (
        f"**{row['model']}**: the fastest MRL pipeline {within} is {row['best']}: "
        f"{row['best_ms']:.3f} ms/query and {row['best_bytes']:.0f} bytes/vector against "
        f"{row['reference_ms']:.3f} ms and {row['reference_bytes']:.0f} bytes for exact "
        f"single-shot at full size, {ratio_text(row['speedup_vs_exact'], 'faster', 'slower')} "
        f"(top-1 {100 * row['top1_delta']:+.2f} points, mAP@{row['k']} "
        f"{100 * row['map_delta']:+.2f}); NN recall@{row['k']} {row['recall']:.3f}."
    )
    if not row["peer"]:
        return f"{text} No faiss peer configuration reaches that recall."
    return (
        f"{text} The fastest faiss peer at that recall, {row['peer']} (recall "
        f"{row['peer_recall']:.3f}, {row['peer_bytes']:.0f} bytes/vector), takes "
        f"{row['peer_ms']:.3f} ms/query: the MRL pipeline is "
        f"{ratio_text(row['speedup_vs_peer'], 'faster', 'slower')}."
    )


def headline_text(headlines: pd.DataFrame, key: str) -> str:
    """The sentences of headline ``key`` as Markdown: one sentence, or a bullet list."""
    texts = list(headlines.loc[headlines["headline"] == key, "text"])
    if not texts:
        raise ValueError(f"no headline {key!r}; keys: {sorted(headlines['headline'].unique())}")
    return texts[0] if len(texts) == 1 else "\n".join(f"* {t}" for t in texts)
