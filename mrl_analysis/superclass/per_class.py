"""Per-class accuracy trends across nesting sizes (paper Appendix J, Figure 12).

:func:`per_class_accuracy` gives one row per size × class; :func:`classify_trends`
sorts every class's accuracy curve into one of four trends, on the number of correct
samples ``c_1 .. c_G`` of the class at increasing sizes:

``monotonic increase``
    every step ``c_{j+1} - c_j >= -tolerance`` and ``c_G - c_1 > tolerance``.
``increase then dip``
    rises (steps ``>= -tolerance``) to its first maximum ``c_p`` with ``c_p - c_1 >
    tolerance``, then drops below it by 1 to ``dip`` samples at most (the paper's "slight
    dip, one or two misclassifications per class").
``decline then increase``
    falls (steps ``<= tolerance``) to its first minimum ``c_v`` with ``c_1 - c_v >
    tolerance``, then rises (steps ``>= -tolerance``) with ``c_G - c_v > tolerance``.
``no clear trend``
    everything else, flat curves included.

The categories are tried in that order. ``tolerance=0, dip=2`` are the defaults, in
samples; given as floats below 1 they are shares of each class's sample count (rounded,
``dip`` at least 1), so that one setting fits 50 samples per class (ImageNet val, where the
paper's "one or two" is 2-4%) and 1000 (Fashion-MNIST test) alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mrl_analysis.core.checks import check_int, check_scores
from mrl_analysis.core.numeric import predictions

TRENDS = ("monotonic increase", "increase then dip", "decline then increase", "no clear trend")


def per_class_accuracy(
    scores: np.ndarray,
    labels: np.ndarray,
    nesting: Sequence[int],
    *,
    class_names: Sequence[str] | None = None,
    reference_size: int | None = None,
    model: str = "MRL",
) -> pd.DataFrame:
    """Accuracy of every class at every size, one row per size × class.

    Columns: ``model, truncate_dim, class_index, class_name, n_samples, n_correct,
    accuracy, relative_accuracy, reference_size``: ``relative_accuracy`` is the accuracy
    minus the class's accuracy at ``reference_size`` (the largest size by default;
    Figure 12). Classes without samples
    (e.g. on ImageNet-A's 200-class subset) are left out.
    """
    scores, labels, sizes = check_scores(scores, labels, nesting)
    num_classes = scores.shape[2]
    if class_names is None:
        class_names = [str(c) for c in range(num_classes)]
    elif len(class_names) != num_classes:
        raise ValueError(
            f"class_names has {len(class_names)} names for {num_classes} classes: "
            "give one name per class index"
        )
    ref = sizes[-1] if reference_size is None else check_int(reference_size, "reference_size")
    if ref not in sizes:
        raise ValueError(f"reference_size {ref} is not one of the nesting sizes {sizes}")
    correct = predictions(scores) == labels[None, :]
    n = np.bincount(labels, minlength=num_classes)
    keys = labels[None, :] + num_classes * np.arange(len(sizes))[:, None]
    hits = np.bincount(keys.ravel(), correct.ravel(), len(sizes) * num_classes)
    hits = hits.reshape(len(sizes), num_classes).astype(np.int64)
    present = np.flatnonzero(n)
    hits, n = hits[:, present], n[present]
    acc = hits / n
    g = len(sizes)
    return pd.DataFrame(
        {
            "model": model,
            "truncate_dim": np.repeat(sizes, present.size),
            "class_index": np.tile(present, g),
            "class_name": np.tile(np.asarray(class_names, dtype=object)[present], g),
            "n_samples": np.tile(n, g),
            "n_correct": hits.ravel(),
            "accuracy": acc.ravel(),
            "relative_accuracy": (acc - acc[sizes.index(ref)]).ravel(),
            "reference_size": ref,
        }
    )


def _trend_codes(c: np.ndarray, tolerance: np.ndarray, dip: np.ndarray) -> np.ndarray:
    """Trend index into :data:`TRENDS` for each row of correct counts ``c [K, G]``, with
    per-row thresholds ``tolerance [K]`` and ``dip [K]``."""
    k, g = c.shape
    tol = tolerance[:, None]
    steps = np.diff(c, axis=1)  # step j goes from size j to j + 1
    j = np.arange(g - 1)[None, :]
    first, last = c[:, 0], c[:, -1]

    monotonic = (steps >= -tol).all(axis=1) & (last - first > tolerance)

    peak = c.argmax(axis=1)
    rising = np.where(j < peak[:, None], steps >= -tol, True).all(axis=1)
    after_peak = np.where(np.arange(g)[None, :] > peak[:, None], c, np.iinfo(c.dtype).max)
    drop = c.max(axis=1) - after_peak.min(axis=1)
    peaked = rising & (c.max(axis=1) - first > tolerance) & (drop >= 1) & (drop <= dip)

    valley = c.argmin(axis=1)
    before = j < valley[:, None]
    v_shape = np.where(before, steps <= tol, steps >= -tol).all(axis=1)
    low = c.min(axis=1)
    v_shape &= (first - low > tolerance) & (last - low > tolerance)

    return np.select([monotonic, peaked, v_shape], [0, 1, 2], default=3)


def classify_trends(table: pd.DataFrame, *, tolerance: float = 0, dip: float = 2) -> pd.DataFrame:
    """Trend category per model × class from :func:`per_class_accuracy` (see module doc).

    ``tolerance`` and ``dip`` are in samples (correct predictions), or, as floats below 1,
    shares of each class's ``n_samples``. Returns columns ``model, class_index,
    class_name, trend``.
    """
    if tolerance < 0 or dip <= 0 or (dip >= 1 and dip != int(dip)):
        raise ValueError(
            f"need tolerance >= 0 and dip a share in (0, 1) or a whole count >= 1, got "
            f"{tolerance} and {dip}"
        )
    shares = [v for v in (tolerance, dip) if 0 < v < 1]
    if shares and "n_samples" not in table:
        raise ValueError(
            "tolerance or dip below 1 is a share of each class's samples, but the table has "
            "no n_samples column (per_class_accuracy gives one); pass whole counts instead"
        )
    out = []
    for model, part in table.groupby("model", sort=False):
        counts = part.pivot(index="class_index", columns="truncate_dim", values="n_correct")
        names = part.drop_duplicates("class_index").set_index("class_index")["class_name"]
        n = (
            part.drop_duplicates("class_index")
            .set_index("class_index")["n_samples"]
            .loc[counts.index]
            .to_numpy(dtype=float)
            if shares
            else np.ones(len(counts))
        )
        tol = np.rint(tolerance * n) if 0 < tolerance < 1 else np.full(len(n), tolerance)
        dips = np.maximum(np.rint(dip * n), 1) if dip < 1 else np.full(len(n), dip)
        codes = _trend_codes(counts.to_numpy(dtype=np.int64), tol, dips)
        out.append(
            pd.DataFrame(
                {
                    "model": model,
                    "class_index": counts.index.to_numpy(),
                    "class_name": names.loc[counts.index].to_numpy(),
                    "trend": np.asarray(TRENDS, dtype=object)[codes],
                }
            )
        )
    return pd.concat(out, ignore_index=True)


def trend_counts(trends: pd.DataFrame) -> pd.DataFrame:
    """Number of classes per model × trend (all four trends, zeros included)."""
    counts = pd.crosstab(trends["model"], trends["trend"]).reindex(columns=TRENDS, fill_value=0)
    return counts.stack().rename("n_classes").reset_index()


def relative_accuracy_outliers(
    table: pd.DataFrame, n: int = 1, sizes: Sequence[int] | None = None
) -> pd.DataFrame:
    """The ``n`` classes that gain most from *smaller* sizes (the paper's Madagascar cat).

    Ranks classes by mean ``relative_accuracy`` over ``sizes`` (default: all sizes but the
    reference). Returns ``class_index, class_name, mean_relative_accuracy``.
    """
    if table["model"].nunique() > 1:
        raise ValueError("relative_accuracy_outliers needs one model: filter the table first")
    if sizes is None:
        part = table[table["truncate_dim"] != table["reference_size"]]
    else:
        part = table[table["truncate_dim"].isin(sizes)]
    mean = part.groupby(["class_index", "class_name"])["relative_accuracy"].mean()
    return mean.nlargest(n).rename("mean_relative_accuracy").reset_index()


def at_sizes(table: pd.DataFrame, model: str, sizes: Sequence[int], label: str) -> pd.DataFrame:
    """The rows of ``model`` at ``sizes`` only, renamed ``label`` (e.g. MRL at the FF sizes,
    for trends over the same size grid)."""
    sizes = [check_int(m, "sizes entry") for m in sizes]
    part = table[(table["model"] == model) & table["truncate_dim"].isin(sizes)]
    missing = sorted(set(sizes) - set(part["truncate_dim"].astype(int)))
    if missing:
        raise ValueError(f"{model!r} has no rows at sizes {missing}")
    return part.assign(model=label).reset_index(drop=True)
