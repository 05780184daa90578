"""Tables derived from the few-shot and FLUID tables: saturation sizes and display tables.

All take the tidy tables of :mod:`mrl_analysis.fewshot.episodes` / :mod:`.fluid` (accuracies
as fractions) and return small tidy tables; nothing here reads a cache or draws a figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mrl_analysis.core.checks import check_fraction, check_table
from mrl_analysis.core.kinds import model_display_name
from mrl_analysis.core.sizes import smallest_size_within
from mrl_analysis.fewshot.fluid import CATEGORIES

SATURATION_COLUMNS = ["saturation_dim", "accuracy", "largest_dim", "largest_accuracy"]


def saturation_table(table: pd.DataFrame, tolerance: float = 0.01) -> pd.DataFrame:
    """The smallest size within ``tolerance`` of the largest size's accuracy, per line.

    ``tolerance`` is a fraction (0.01 = one point). Lines are :func:`model_display_name`
    (FF-k models form one "FF" line), per shots, ways and every other key column of
    ``table`` (e.g. a ``setting`` column the caller added); the rule is
    :func:`mrl_analysis.core.sizes.smallest_size_within` against the largest size. Lines
    with a single size saturate trivially and are left out. Columns: the keys,
    ``saturation_dim``, ``accuracy`` at it, ``largest_dim`` and ``largest_accuracy``. The
    paper's example: 1-shot saturates at 32 dims (Table 15).
    """
    check_table(table, {"model", "truncate_dim", "accuracy"}, "fewshot_accuracy")
    tolerance = check_fraction(tolerance, "tolerance")
    data = table.assign(model=table["model"].map(model_display_name))
    keys = [c for c in data.columns if c not in ("truncate_dim", "accuracy", "ci_low", "ci_high")]
    found = smallest_size_within(
        data, by=keys, value="accuracy", reference="largest", tolerance=tolerance
    ).rename(
        columns={
            "smallest_dim": "saturation_dim",
            "smallest_value": "accuracy",
            "reference_dim": "largest_dim",
            "reference_value": "largest_accuracy",
        }
    )
    sizes_per_line = data.groupby("model")["truncate_dim"].nunique()
    found = found[found["model"].map(sizes_per_line) > 1]
    return found[[*keys, *SATURATION_COLUMNS]].reset_index(drop=True)


def accuracy_ci_table(table: pd.DataFrame, decimals: int = 1) -> pd.DataFrame:
    """Accuracy and its interval as percent text (``62.3 [60.1, 64.2]``): a row per (ways,
    model, size), a column per shots. Models keep their order in ``table``.
    """
    check_table(
        table,
        {"model", "truncate_dim", "shots", "ways", "accuracy", "ci_low", "ci_high"},
        "fewshot_accuracy",
    )
    acc, low, high = (100 * table[c].to_numpy() for c in ("accuracy", "ci_low", "ci_high"))
    order = list(dict.fromkeys(table["model"]))
    text = table.assign(
        model=pd.Categorical(table["model"], categories=order),
        value=[
            f"{a:.{decimals}f} [{lo:.{decimals}f}, {hi:.{decimals}f}]"
            for a, lo, hi in zip(acc, low, high, strict=True)
        ],
    )
    grid = text.set_index(["ways", "model", "truncate_dim", "shots"])["value"].unstack("shots")
    return grid.sort_index()


def class_split_table(
    pretrain: Sequence[int], novel: Sequence[int], class_names: Sequence[str]
) -> pd.DataFrame:
    """A row per origin (pretrain / novel): ``classes`` (how many) and their ``names``."""
    rows = []
    for origin, labels in (("pretrain", pretrain), ("novel", novel)):
        labels = np.asarray(labels, dtype=np.int64)
        names = [str(class_names[c]) if c < len(class_names) else str(c) for c in labels]
        rows.append({"origin": origin, "classes": len(labels), "names": ", ".join(names)})
    return pd.DataFrame(rows)


def category_counts(classes: pd.DataFrame) -> pd.DataFrame:
    """Classes and stream samples per category, from ``FluidStream.class_table``."""
    check_table(classes, {"category", "count"}, "FluidStream.class_table")
    return (
        classes.groupby("category")["count"]
        .agg(["size", "sum"])
        .rename(columns={"size": "classes", "sum": "samples"})
    )


def category_table(accuracy: pd.DataFrame) -> pd.DataFrame:
    """FLUID accuracy (fractions) as a grid: a row per (model, size), a column per category
    in the order of :data:`~mrl_analysis.fewshot.fluid.CATEGORIES`; models keep their order."""
    check_table(accuracy, {"model", "truncate_dim", "category", "accuracy"}, "fluid_accuracy")
    order = list(dict.fromkeys(accuracy["model"]))
    data = accuracy.assign(model=pd.Categorical(accuracy["model"], categories=order))
    grid = data.pivot_table(
        index=["model", "truncate_dim"],
        columns="category",
        values="accuracy",
        observed=True,
        dropna=False,
    )
    return grid[[c for c in CATEGORIES if c in grid.columns]]


def category_ci_table(accuracy: pd.DataFrame, decimals: int = 1) -> pd.DataFrame:
    """FLUID accuracy and its bootstrap interval as percent text (``62.3 [58.0, 66.1]``),
    laid out as :func:`category_table`; ``n/a`` where a category has no classes."""
    check_table(
        accuracy,
        {"model", "truncate_dim", "category", "accuracy", "ci_low", "ci_high"},
        "fluid_accuracy",
    )
    acc, low, high = (100 * accuracy[c].to_numpy() for c in ("accuracy", "ci_low", "ci_high"))
    text = [
        "n/a"
        if np.isnan(a)
        else f"{a:.{decimals}f}"
        if np.isnan(lo)
        else f"{a:.{decimals}f} [{lo:.{decimals}f}, {hi:.{decimals}f}]"
        for a, lo, hi in zip(acc, low, high, strict=True)
    ]
    order = list(dict.fromkeys(accuracy["model"]))
    data = accuracy.assign(model=pd.Categorical(accuracy["model"], categories=order), text=text)
    grid = data.set_index(["model", "truncate_dim", "category"])["text"].unstack("category")
    return grid.sort_index()[[c for c in CATEGORIES if c in grid.columns]]
