"""The numbers notebook 04 states, as small tidy tables built from the study's tables.

One row per number: ``headline`` (a stable key), ``subject`` (the size or direction it is
about), ``value`` (counts, shares as fractions, correlations) and ``text``, the sentence
that states it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mrl_analysis.core.checks import check_int
from mrl_analysis.core.stats import mean_ci
from mrl_analysis.interpret.disagreement import DIRECTIONS, WITHIN

COLUMNS = ["headline", "subject", "value", "text"]
_WHAT = {
    "fixed": "wrong at {lo} dims and right at {hi}",
    "broken": "right at {lo} dims and wrong at {hi}",
}


def _table(rows: list[tuple[str, str, float, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS).astype({"value": float})


def disagreement_headlines(cases: pd.DataFrame, n_samples: int) -> pd.DataFrame:
    """How often two sizes disagree, and how often the wrong answer stays in the true
    superclass.

    ``cases``: a :func:`~mrl_analysis.interpret.disagreement.find_disagreements` table (all
    cases, not only the top ones) of an eval set of ``n_samples``. Headlines per direction
    (``fixed``, ``broken``): ``n_cases`` (a count), ``share_of_samples`` and
    ``within_superclass_share`` (the share of the direction's cases whose wrong prediction
    is a sibling class in the true superclass, with its bootstrap interval over those
    cases in the text; NaN without a hierarchy or without cases).
    """
    n_samples = check_int(n_samples, "n_samples", low=1)
    if cases.empty:
        text = "No sample is right at one of the two sizes and wrong at the other"
        return _table([("n_cases", d, 0.0, text) for d in DIRECTIONS])
    lo, hi = int(cases["small_dim"].iloc[0]), int(cases["large_dim"].iloc[0])
    rows = []
    for d in DIRECTIONS:
        part = cases[cases["direction"] == d]
        n = len(part)
        what = _WHAT[d].format(lo=lo, hi=hi)
        labelled = part["confusion"].notna().any()
        within, interval = np.nan, ""
        if n and labelled:
            ci = mean_ci((part["confusion"] == WITHIN).to_numpy(float)).iloc[0]
            within = float(ci["value"])
            interval = f" (95% interval {ci['ci_low']:.0%}–{ci['ci_high']:.0%})"
        wrong_at = lo if d == "fixed" else hi
        rows += [
            ("n_cases", d, n, f"{n} samples are {what} ({d})"),
            ("share_of_samples", d, n / n_samples, f"{n / n_samples:.1%} of the eval set is {d}"),
            (
                "within_superclass_share",
                d,
                within,
                f"{within:.0%} of the {d} cases' errors at {wrong_at} dims stay inside the true "
                f"superclass{interval}"
                if np.isfinite(within)
                else f"no superclass label for the {d} cases",
            ),
        ]
    return _table(rows)


def _metric(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    return summary[summary["metric"] == metric].sort_values("truncate_dim")


def cam_headlines(similarity: pd.DataFrame, boxes: pd.DataFrame | None = None) -> pd.DataFrame:
    """How much the CAMs change with the size.

    ``similarity``: :func:`~mrl_analysis.interpret.cam_metrics.cam_metric_summary` of
    ``spearman`` (against the largest size); ``boxes``: the same of ``energy_in_box``,
    ``box_area_fraction`` and ``pointing_hit``, or None. Headlines:
    ``spearman_at_smallest`` (the mean correlation at the smallest size that has one),
    ``spearman_undefined`` (value 0, per size whose maps are all constant) and, with boxes,
    ``pointing_hit`` and ``energy_in_box`` at the smallest and the largest size
    (``subject`` = the size) and ``box_area_fraction`` (the chance level of the energy).
    """
    rows = []
    spearman = _metric(similarity, "spearman")
    if spearman.empty:
        raise ValueError("the similarity summary has no 'spearman' rows")
    reference = int(spearman["truncate_dim"].iloc[-1])
    # A constant map ranks no pixels: sizes where every map is constant have no correlation.
    undefined = spearman[spearman["n"] == 0]
    for m in undefined["truncate_dim"].astype(int):
        rows.append(
            (
                "spearman_undefined",
                str(m),
                0.0,
                f"At d = {m} no CAM has a rank correlation with the d = {reference} CAM: "
                "the maps are constant",
            )
        )
    defined = spearman[(spearman["n"] > 0) & (spearman["truncate_dim"] != reference)]
    if not defined.empty:
        first = defined.iloc[0]
        rows.append(
            (
                "spearman_at_smallest",
                str(int(first["truncate_dim"])),
                first["mean"],
                f"At d = {first['truncate_dim']:.0f} the CAM ranks the pixels like the d = "
                f"{reference} CAM with a mean Spearman correlation of {first['mean']:.2f} ± "
                f"{first['sem']:.2f} over the {first['n']:.0f} images with non-constant maps",
            )
        )
    if boxes is None:
        return _table(rows)
    for metric, say in [
        ("pointing_hit", "the CAM's peak falls in the object box for {v:.0%} of the images"),
        ("energy_in_box", "{v:.0%} of the CAM's energy lies in the object box"),
    ]:
        part = _metric(boxes, metric)
        for _, r in part.iloc[[0, -1]].drop_duplicates("truncate_dim").iterrows():
            m = int(r["truncate_dim"])
            rows.append((metric, str(m), r["mean"], f"At d = {m} " + say.format(v=r["mean"])))
    chance = _metric(boxes, "box_area_fraction")
    if not chance.empty:
        v = float(chance["mean"].iloc[0])
        rows.append(
            (
                "box_area_fraction",
                "all",
                v,
                f"The boxes cover {v:.0%} of the image: the energy share of a uniform map",
            )
        )
    return _table(rows)
