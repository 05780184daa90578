"""Headlines of the few-shot and FLUID study: the numbers notebook 05 states, as tables.

Each function takes the study's tidy tables and returns one row per statement: a stable
``headline`` key, the ``value`` stated, the numbers it is built from and the rendered
``text`` (accuracies are fractions; the text shows them as percent).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from mrl_analysis.core.checks import check_table
from mrl_analysis.fewshot.fluid import CATEGORIES
from mrl_analysis.fewshot.stream import FluidStream

#: Few-shot headline rows: ``value`` is ``accuracy`` for a plain statement and
#: ``accuracy - baseline_accuracy`` (a gap, as a fraction) for a comparison.
FEWSHOT_COLUMNS = [
    "headline",
    "model",
    "baseline",
    "shots",
    "ways",
    "truncate_dim",
    "accuracy",
    "ci_low",
    "ci_high",
    "baseline_accuracy",
    "baseline_ci_low",
    "baseline_ci_high",
    "value",
    "text",
]
SATURATION_COLUMNS = [
    "headline",
    "model",
    "ways",
    "fewest_shots",
    "value",
    "most_shots",
    "most_shots_dim",
    "largest_dim",
    "text",
]
FLUID_COLUMNS = [
    "headline",
    "model",
    "truncate_dim",
    "category",
    "value",
    "ci_low",
    "ci_high",
    "text",
]
STREAM_COLUMNS = ["headline", "value", "text"]

_NOVEL = " on novel classes"
_FEWSHOT_NEEDED = {"model", "truncate_dim", "shots", "ways", "accuracy", "ci_low", "ci_high"}


def _pct(accuracy: float, low: float | None = None, high: float | None = None) -> str:
    """``62.3%``, or with an interval ``62.3% [60.1, 64.2]`` (percent)."""
    if np.isnan(accuracy):
        return "n/a"
    if low is None or high is None or np.isnan(low) or np.isnan(high):
        return f"{100 * accuracy:.1f}%"
    return f"{100 * accuracy:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"


def _cells(table: pd.DataFrame, model: str, shots: int, ways: int) -> pd.DataFrame:
    """``accuracy`` and its interval for one model, shot and way count, indexed by size."""
    rows = table[(table["model"] == model) & (table["shots"] == shots) & (table["ways"] == ways)]
    return rows.set_index("truncate_dim")[["accuracy", "ci_low", "ci_high"]].sort_index()


def _row(
    headline: str,
    pair: tuple[str, str | None],
    cell: tuple[int, int, int],
    ours: pd.Series,
    theirs: pd.Series | None = None,
    where: str = "",
) -> dict:
    """A statement of ``pair[0]``'s accuracy at ``cell`` (shots, ways, size), or, with
    ``theirs``, its comparison with the baseline ``pair[1]``."""
    (model, baseline), (n, k, m) = pair, cell
    acc, low, high = (float(ours[c]) for c in ("accuracy", "ci_low", "ci_high"))
    row = {"headline": headline, "model": model, "shots": n, "ways": k, "truncate_dim": m}
    row |= {"accuracy": acc, "ci_low": low, "ci_high": high}
    if theirs is None:
        text = f"{model}, {n}-shot {k}-way{where} at m = {m}: {_pct(acc, low, high)}"
        return {**row, "value": acc, "text": text}
    ref, ref_low, ref_high = (float(theirs[c]) for c in ("accuracy", "ci_low", "ci_high"))
    text = (
        f"{n}-shot {k}-way{where} at m = {m}: {model} {_pct(acc, low, high)} vs {baseline} "
        f"{_pct(ref, ref_low, ref_high)} ({100 * (acc - ref):+.1f} points)"
    )
    row |= {"baseline": baseline, "baseline_accuracy": ref}
    row |= {"baseline_ci_low": ref_low, "baseline_ci_high": ref_high}
    return {**row, "value": acc - ref, "text": text}


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


def own_class_headlines(table: pd.DataFrame, kinds: Mapping[str, str]) -> pd.DataFrame:
    """Few-shot on the models' own classes, at the smallest way count of ``table``.

    ``kinds`` maps model names to head kinds: the first ``"mrl"`` model is the reference.
    Rows ``accuracy``: the reference at its smallest and largest size, with the fewest and
    the most shots; rows ``vs_ff``: the reference against each ``"ff"`` model at that
    model's size(s), with the fewest shots. Empty without an MRL model in ``table``.
    """
    check_table(table, _FEWSHOT_NEEDED, "fewshot_table")
    present = set(table["model"])
    reference = next((n for n, kind in kinds.items() if kind == "mrl" and n in present), None)
    if reference is None:
        return _frame([], FEWSHOT_COLUMNS)
    k = int(table["ways"].min())
    shots = sorted({int(table["shots"].min()), int(table["shots"].max())})
    rows = []
    for n in shots:
        cells = _cells(table, reference, n, k)
        for m in dict.fromkeys([cells.index.min(), cells.index.max()]):
            rows.append(_row("accuracy", (reference, None), (n, k, int(m)), cells.loc[m]))
    ours = _cells(table, reference, shots[0], k)
    for name, kind in kinds.items():
        if kind != "ff" or name not in present:
            continue
        theirs = _cells(table, name, shots[0], k)
        for m in theirs.index.intersection(ours.index):
            rows.append(
                _row("vs_ff", (reference, name), (shots[0], k, int(m)), ours.loc[m], theirs.loc[m])
            )
    return _frame(rows, FEWSHOT_COLUMNS)


def novel_class_headlines(table: pd.DataFrame, twins: Mapping[str, str | None]) -> pd.DataFrame:
    """Few-shot on novel classes, at the smallest way count of ``table``.

    ``twins`` maps each class-subset model of ``table`` to its all-classes counterpart (or
    None). Per subset model, at its largest size, with the fewest and the most shots:
    ``novel_vs_all_classes`` against its twin (``value``: the gap), or ``accuracy`` without
    one; then ``gap_per_size``: the gap with the fewest shots at every shared size.
    """
    check_table(table, _FEWSHOT_NEEDED, "fewshot_table")
    k = int(table["ways"].min())
    shots = sorted({int(table["shots"].min()), int(table["shots"].max())})
    present = set(table["model"])
    rows = []
    for model, twin in twins.items():
        if model not in present:
            continue
        twin = twin if twin in present else None
        for n in shots:
            ours = _cells(table, model, n, k)
            m = int(ours.index.max())
            theirs = None if twin is None else _cells(table, twin, n, k)
            if theirs is None or m not in theirs.index:
                rows.append(_row("accuracy", (model, None), (n, k, m), ours.loc[m], where=_NOVEL))
            else:
                pair, cell = (model, twin), (n, k, m)
                rows.append(
                    _row("novel_vs_all_classes", pair, cell, ours.loc[m], theirs.loc[m], _NOVEL)
                )
        ours = _cells(table, model, shots[0], k)
        if twin is not None and len(ours) > 1:
            theirs = _cells(table, twin, shots[0], k)
            for m in ours.index.intersection(theirs.index):
                cell = (shots[0], k, int(m))
                rows.append(
                    _row("gap_per_size", (model, twin), cell, ours.loc[m], theirs.loc[m], _NOVEL)
                )
    return _frame(rows, FEWSHOT_COLUMNS)


def saturation_headlines(saturation: pd.DataFrame) -> pd.DataFrame:
    """Per line and way count: the saturation size with the fewest and with the most shots.

    ``saturation``: a :func:`mrl_analysis.fewshot.summary.saturation_table`; ``value`` is
    the saturation size with the fewest shots; ``text`` lists every shot count.
    """
    check_table(
        saturation, {"model", "shots", "ways", "saturation_dim", "largest_dim"}, "saturation_table"
    )
    rows = []
    for (model, k), part in saturation.groupby(["model", "ways"], sort=False):
        part = part.sort_values("shots")
        first, last = part.iloc[0], part.iloc[-1]
        dims = ", ".join(f"{r.shots}-shot: {r.saturation_dim}" for r in part.itertuples())
        rows.append(
            {
                "headline": "saturation",
                "model": model,
                "ways": int(k),
                "fewest_shots": int(first["shots"]),
                "value": int(first["saturation_dim"]),
                "most_shots": int(last["shots"]),
                "most_shots_dim": int(last["saturation_dim"]),
                "largest_dim": int(part["largest_dim"].max()),
                "text": f"{model}, {k}-way, saturates at m = {dims}",
            }
        )
    return _frame(rows, SATURATION_COLUMNS)


def fluid_headlines(accuracy: pd.DataFrame) -> pd.DataFrame:
    """FLUID per model: every category at the largest size (``at_largest``); with several
    sizes also ``overall_at_smallest``, ``best_overall`` (the size with the highest overall
    accuracy, the smallest on a tie) and ``novel_tail_at_smallest``. ``ci_low`` /
    ``ci_high``: the bootstrap interval of the value (NaN if ``accuracy`` has none)."""
    check_table(accuracy, {"model", "truncate_dim", "category", "accuracy"}, "fluid_accuracy")
    data = accuracy.copy()
    for column in ("ci_low", "ci_high"):
        if column not in data:
            data[column] = np.nan
    rows = []

    def add(headline: str, model: str, cell: pd.Series, text: str = "") -> None:
        m, category = int(cell["truncate_dim"]), str(cell["category"])
        value, low, high = (float(cell[c]) for c in ("accuracy", "ci_low", "ci_high"))
        text = text or f"{model} at m = {m}: {category} {_pct(value, low, high)}"
        rows.append(
            {
                "headline": headline,
                "model": model,
                "truncate_dim": m,
                "category": category,
                "value": value,
                "ci_low": low,
                "ci_high": high,
                "text": text,
            }
        )

    order = {c: i for i, c in enumerate(CATEGORIES)}
    for model, part in data.groupby("model", sort=False):
        part = part.assign(rank=part["category"].map(order)).sort_values(["truncate_dim", "rank"])
        small, large = int(part["truncate_dim"].min()), int(part["truncate_dim"].max())
        for _, cell in part[part["truncate_dim"] == large].iterrows():
            add("at_largest", model, cell)
        if small == large:
            continue
        for headline, category in (
            ("overall_at_smallest", "overall"),
            ("novel_tail_at_smallest", "novel-tail"),
        ):
            cell = part[(part["truncate_dim"] == small) & (part["category"] == category)]
            if len(cell):
                add(headline, model, cell.iloc[0])
        overall = part[part["category"] == "overall"]
        if len(overall) and overall["accuracy"].notna().any():
            best = overall.loc[overall["accuracy"].idxmax()]
            value, low, high = (float(best[c]) for c in ("accuracy", "ci_low", "ci_high"))
            text = (
                f"{model}: best overall {_pct(value, low, high)} at m = {int(best['truncate_dim'])}"
            )
            add("best_overall", model, best, text)
    return _frame(rows, FLUID_COLUMNS)


def stream_headlines(
    stream: FluidStream, head_threshold: float, init_samples: int, init_split: str = "train"
) -> pd.DataFrame:
    """The stream's length and draw, the head threshold in samples and how many training
    samples the pretrain class means start from."""
    draw = (
        f"{stream.distribution}, alpha = {stream.alpha:g}" if stream.alpha else stream.distribution
    )
    rows = [
        ("stream_samples", len(stream), f"{len(stream)} stream samples ({draw})"),
        ("head_threshold", head_threshold, f"head = more than {head_threshold:.0f} samples"),
        (
            "init_samples",
            init_samples,
            f"pretrain means start from {init_samples} {init_split} samples",
        ),
    ]
    return pd.DataFrame(rows, columns=STREAM_COLUMNS)
