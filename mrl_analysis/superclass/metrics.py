"""Superclass accuracy across nesting sizes (paper §5, Figures 10-11, Tables 24-25).

Fine-class predictions are mapped to superclasses through a :class:`SuperclassMap`,
built by the library's one resolver, :func:`mrl_analysis.data.hierarchy.resolve_superclasses`
(the data's stored hierarchy, a user JSON file or WordNet). Classes outside the chosen
superclasses can fall into one extra *reject* superclass, as in the paper's 31-way ImageNet
setup (30 WordNet superclasses + reject). All rates are fractions in [0, 1].

Three metrics per size, overall and per superclass:

* ``superclass_accuracy``: the predicted fine class lies in the true superclass;
* ``within_superclass_accuracy`` (per superclass, Figure 11): top-1 among the fine
  classes of the true superclass only, i.e. how well a size separates the classes
  *inside* a superclass (the authors' "reduced search space" accuracy);
* ``within_superclass_error_share``: of the fine-grained errors, the share whose
  prediction still lies in the true superclass.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mrl_analysis.core.checks import check_scores
from mrl_analysis.core.numeric import predictions
from mrl_analysis.core.stats import N_BOOT, Bootstrap, bootstrap_means, bootstrap_ratios
from mrl_analysis.data.hierarchy import SuperclassMap


def _check_map(smap: SuperclassMap, num_classes: int) -> None:
    if smap.index.shape != (num_classes,):
        raise ValueError(
            f"the superclass map covers {smap.index.shape[0]} classes but the scores have "
            f"{num_classes}: build it from the same class_ids"
        )


def _superclass_outcomes(
    scores: np.ndarray, labels: np.ndarray, nesting: Sequence[int], smap: SuperclassMap
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    scores, labels, sizes = check_scores(scores, labels, nesting)
    _check_map(smap, scores.shape[2])
    preds = predictions(scores)
    fine = preds == labels[None, :]
    true_super = smap.of(labels)
    same_super = smap.of(preds) == true_super[None, :]
    return fine, same_super, true_super, sizes


def _with_intervals(table: pd.DataFrame, boots: dict[str, Bootstrap]) -> pd.DataFrame:
    """``table`` with ``<column>_ci_low`` / ``_ci_high`` right after each column of
    ``boots`` (its bootstrap, one replicate row per table row)."""
    for column, boot in boots.items():
        low, high = boot.interval()
        at = table.columns.get_loc(column) + 1
        table.insert(at, f"{column}_ci_low", low)
        table.insert(at + 1, f"{column}_ci_high", high)
    return table


def superclass_accuracy(
    scores: np.ndarray,
    labels: np.ndarray,
    nesting: Sequence[int],
    smap: SuperclassMap,
    *,
    model: str = "MRL",
    n_boot: int = N_BOOT,
) -> pd.DataFrame:
    """Superclass metrics per size (Figure 10, Table 25), one row per size.

    Columns: ``model, truncate_dim, n_samples, fine_accuracy, superclass_accuracy,
    n_fine_errors, within_superclass_error_share``, each rate followed by its bootstrap
    interval over the samples (``<rate>_ci_low``, ``<rate>_ci_high``; ``n_boot``
    resamples, shared by all sizes). All samples count, those of reject classes included
    (the paper's 31-way setup).
    """
    fine, same, _, sizes = _superclass_outcomes(scores, labels, nesting, smap)
    g = len(sizes)
    rates = bootstrap_means(np.vstack([fine, same]), n_boot)
    share = bootstrap_ratios(~fine & same, ~fine, n_boot)
    table = pd.DataFrame(
        {
            "model": model,
            "truncate_dim": sizes,
            "n_samples": fine.shape[1],
            "fine_accuracy": rates.mean[:g],
            "superclass_accuracy": rates.mean[g:],
            "n_fine_errors": (~fine).sum(axis=1),
            "within_superclass_error_share": share.mean,
        }
    )
    split = {
        "fine_accuracy": slice(0, g),
        "superclass_accuracy": slice(g, 2 * g),
    }
    boots = {
        name: Bootstrap(rates.mean[part], rates.replicates[part], rates.level)
        for name, part in split.items()
    }
    return _with_intervals(table, {**boots, "within_superclass_error_share": share})


def per_superclass_accuracy(
    scores: np.ndarray,
    labels: np.ndarray,
    nesting: Sequence[int],
    smap: SuperclassMap,
    *,
    model: str = "MRL",
    n_boot: int = N_BOOT,
) -> pd.DataFrame:
    """Metrics per size × true superclass (Figure 11), one row each.

    Columns: ``model, truncate_dim, superclass, n_samples, superclass_accuracy``
    (recall of the superclass), ``within_superclass_accuracy`` (top-1 restricted to the
    superclass's own fine classes), ``fine_accuracy, within_superclass_error_share``; the
    three accuracies are followed by their bootstrap intervals over the samples
    (``<rate>_ci_low``, ``<rate>_ci_high``; ``n_boot`` resamples, the superclass's sample
    count varying with the resample). Superclasses without samples are left out.
    """
    fine, same, true_super, sizes = _superclass_outcomes(scores, labels, nesting, smap)
    n_super = smap.num_superclasses
    # Restricting the argmax to the true superclass's classes: mask every other class.
    allowed = smap.index[None, :] == true_super[:, None]  # [N, C]
    restricted = (
        np.stack([np.where(allowed, np.asarray(s), -np.inf).argmax(axis=1) for s in scores])
        == np.asarray(labels)[None, :]
    )
    n = np.bincount(true_super, minlength=n_super)

    def per_super(values: np.ndarray) -> np.ndarray:
        # One bincount over (size, superclass) pairs instead of a loop over sizes.
        keys = true_super[None, :] + n_super * np.arange(len(sizes))[:, None]
        return np.bincount(keys.ravel(), values.ravel(), len(sizes) * n_super).reshape(
            len(sizes), n_super
        )

    errors = per_super(~fine)
    inside = per_super(~fine & same)
    with np.errstate(invalid="ignore", divide="ignore"):
        table = pd.DataFrame(
            {
                "model": model,
                "truncate_dim": np.repeat(sizes, n_super),
                "superclass": np.tile(smap.names, len(sizes)),
                "n_samples": np.tile(n, len(sizes)),
                "superclass_accuracy": (per_super(same) / n).ravel(),
                "within_superclass_accuracy": (per_super(restricted) / n).ravel(),
                "fine_accuracy": (per_super(fine) / n).ravel(),
                "within_superclass_error_share": np.where(
                    errors > 0, inside / errors, np.nan
                ).ravel(),
            }
        )
    # Per (size, superclass) row: hits among the superclass's samples over their count.
    member = (true_super[None, :] == np.arange(n_super)[:, None]).astype(np.float32)  # [S, N]
    den = np.tile(member, (len(sizes), 1))
    boots = {
        name: bootstrap_ratios(
            (values[:, None, :] * member[None]).reshape(-1, len(labels)), den, n_boot
        )
        for name, values in [
            ("superclass_accuracy", same),
            ("within_superclass_accuracy", restricted),
            ("fine_accuracy", fine),
        ]
    }
    table = _with_intervals(table, boots)
    return table[table["n_samples"] > 0].reset_index(drop=True)


def superclass_members(smap: SuperclassMap, class_names: Sequence[str]) -> pd.DataFrame:
    """One row per superclass: ``superclass, n_classes, classes`` (names, comma-joined)."""
    names = np.asarray(class_names, dtype=object)
    if len(names) != smap.index.shape[0]:
        raise ValueError(
            f"class_names has {len(names)} names but the map covers {smap.index.shape[0]} "
            "classes: give one name per class index"
        )
    return pd.DataFrame(
        {
            "superclass": smap.names,
            "n_classes": [int((smap.index == i).sum()) for i in range(len(smap.names))],
            "classes": [", ".join(names[smap.index == i]) for i in range(len(smap.names))],
        }
    )


def paired_by_size(table: pd.DataFrame, metric: str, model: str, baseline: str) -> pd.DataFrame:
    """``metric`` of ``model`` and ``baseline`` at the sizes both have, with the difference.

    Columns: ``truncate_dim, <model>, <baseline>, difference`` (model − baseline).
    """
    known = set(table["model"])
    for who in (model, baseline):
        if who not in known:
            raise ValueError(f"no rows for model {who!r}; the table has {sorted(known)}")
    wide = table[table["model"].isin([model, baseline])].pivot_table(
        index="truncate_dim", columns="model", values=metric
    )
    wide = wide.dropna()[[model, baseline]]
    wide.columns.name = None
    return wide.assign(difference=wide[model] - wide[baseline]).reset_index()
