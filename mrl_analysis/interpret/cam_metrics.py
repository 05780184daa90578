"""Measurements on CAMs across sizes (beyond the paper): tidy tables per image × size.

* :func:`cam_box_metrics`: where a dataset has object boxes (Tiny-ImageNet), the share of
  CAM energy inside the box and whether the CAM's peak falls in it (the "pointing
  game"), per size;
* :func:`cam_rank_similarity`: the Spearman correlation of each size's CAM with a
  reference size's (default the largest);
* :func:`cam_metric_summary`: mean, standard error, count and a bootstrap interval over
  the images per size and metric.

CAMs are arrays ``[n, S, H, W]`` (``SizeCams.cams``), one column per size in ``sizes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from mrl_analysis.core.checks import check_finite, check_int
from mrl_analysis.core.stats import N_BOOT, bootstrap_ratios


def _check_cams(cams: np.ndarray, sizes: Sequence[int]) -> tuple[np.ndarray, list[int]]:
    """``cams`` as float32 ``[n, S, H, W]`` (finite) and ``sizes`` as ints, one per column."""
    sizes = [check_int(m, "sizes entry", low=1) for m in sizes]
    cams = np.asarray(cams, dtype=np.float32)
    if cams.ndim != 4 or cams.shape[1] != len(sizes):
        raise ValueError(
            f"cams must have shape [n, len(sizes)={len(sizes)}, H, W], got {cams.shape}"
        )
    return check_finite(cams, "cams"), sizes


def cam_box_metrics(
    cams: np.ndarray,
    boxes: np.ndarray,
    sizes: Sequence[int],
    *,
    sample_index: Sequence[int] | np.ndarray | None = None,
) -> pd.DataFrame:
    """How well each size's CAM falls on the object box, one row per image × size.

    ``cams [n, S, H, W]``; ``boxes [n, 4]`` as ``(x0, y0, x1, y1)`` in the CAM's pixel
    coordinates, both ends inclusive (Tiny-ImageNet's 64 px boxes as they are); images
    without a box (NaN) are left out. Columns: ``image, sample_index, truncate_dim,
    energy_in_box`` (share of the CAM's mass inside the box), ``box_area_fraction`` (the
    same share for a uniform map: the chance level), ``pointing_hit`` (the CAM's maximum
    lies in the box).
    """
    cams, sizes = _check_cams(cams, sizes)
    boxes = np.asarray(boxes, dtype=np.float64)
    n, s, h, w = cams.shape
    if boxes.shape != (n, 4):
        raise ValueError(f"boxes must have shape [n, 4] = [{n}, 4], got {boxes.shape}")
    index = np.arange(n) if sample_index is None else np.asarray(sample_index).reshape(-1)
    keep = np.flatnonzero(np.isfinite(boxes).all(axis=1))
    cams, boxes, index = cams[keep], boxes[keep], index[keep]
    ys, xs = np.arange(h), np.arange(w)
    inside_y = (ys[None, :] >= boxes[:, 1:2]) & (ys[None, :] <= boxes[:, 3:4])  # [k, H]
    inside_x = (xs[None, :] >= boxes[:, 0:1]) & (xs[None, :] <= boxes[:, 2:3])  # [k, W]
    mask = inside_y[:, :, None] & inside_x[:, None, :]  # [k, H, W]
    total = cams.sum(axis=(2, 3))
    inside = (cams * mask[:, None]).sum(axis=(2, 3))
    peak = cams.reshape(len(keep), s, -1).argmax(axis=2)
    hit = np.take_along_axis(mask.reshape(len(keep), 1, -1), peak[:, :, None], axis=2)[:, :, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        energy = np.where(total > 0, inside / total, np.nan)
    return pd.DataFrame(
        {
            "image": np.repeat(keep, s),
            "sample_index": np.repeat(index, s),
            "truncate_dim": np.tile(np.asarray(sizes), len(keep)),
            "energy_in_box": energy.reshape(-1),
            "box_area_fraction": np.repeat(mask.mean(axis=(1, 2)), s),
            "pointing_hit": hit.reshape(-1),
        }
    )


def cam_rank_similarity(
    cams: np.ndarray,
    sizes: Sequence[int],
    *,
    reference: int | None = None,
    sample_index: Sequence[int] | np.ndarray | None = None,
) -> pd.DataFrame:
    """Spearman correlation of each size's CAM with the ``reference`` size's (default the largest).

    One row per image × size: ``image, sample_index, truncate_dim, reference_dim,
    spearman``; NaN where either map is constant.
    """
    cams, sizes = _check_cams(cams, sizes)
    ref = max(sizes) if reference is None else check_int(reference, "reference")
    if ref not in sizes:
        raise ValueError(f"reference size {ref} is not one of the CAM sizes {sizes}")
    n, s = cams.shape[:2]
    index = np.arange(n) if sample_index is None else np.asarray(sample_index).reshape(-1)
    ranks = rankdata(cams.reshape(n, s, -1), axis=2)
    ranks -= ranks.mean(axis=2, keepdims=True)
    ref_ranks = ranks[:, sizes.index(ref)][:, None]
    num = (ranks * ref_ranks).sum(axis=2)
    den = np.sqrt((ranks**2).sum(axis=2) * (ref_ranks**2).sum(axis=2))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, num / den, np.nan)
    return pd.DataFrame(
        {
            "image": np.repeat(np.arange(n), s),
            "sample_index": np.repeat(index, s),
            "truncate_dim": np.tile(np.asarray(sizes), n),
            "reference_dim": ref,
            "spearman": rho.reshape(-1),
        }
    )


def cam_metric_summary(
    table: pd.DataFrame, metrics: Sequence[str], *, n_boot: int = N_BOOT, **labels: Any
) -> pd.DataFrame:
    """Mean, standard error, count and bootstrap interval of ``metrics`` per size: one row
    per size × metric (columns ``truncate_dim, metric, mean, sem, n, ci_low, ci_high``).

    The interval resamples the images (``n_boot`` resamples, shared by every size and
    metric, so sizes stay paired); an image whose value is NaN at a size (a constant map
    has no rank correlation) does not count there. ``labels`` become constant columns
    (e.g. ``model="MRL"``).
    """
    missing = [m for m in ["image", "truncate_dim", *metrics] if m not in table.columns]
    if missing:
        raise ValueError(f"table has no columns {missing}; it has {list(table.columns)}")
    long = table.melt(id_vars="truncate_dim", value_vars=list(metrics), var_name="metric")
    long["value"] = long["value"].astype(float)
    out = (
        long.groupby(["truncate_dim", "metric"], sort=True)["value"]
        .agg(mean="mean", sem="sem", n="count")
        .reset_index()
    )
    # [size × metric, image]: each value where it is defined, over the images it is defined for.
    wide = table.pivot_table(
        index="image", columns="truncate_dim", values=list(metrics), dropna=False
    ).astype(float)
    values = wide.to_numpy().T
    valid = np.isfinite(values)
    boot = bootstrap_ratios(np.where(valid, values, 0.0), valid, n_boot)
    low, high = boot.interval()
    keys = pd.MultiIndex.from_arrays(
        [wide.columns.get_level_values(1), wide.columns.get_level_values(0)]
    )
    bounds = pd.DataFrame({"ci_low": low, "ci_high": high}, index=keys)
    out = out.join(bounds, on=["truncate_dim", "metric"])
    for key, value in labels.items():
        out.insert(0, key, value)
    return out
