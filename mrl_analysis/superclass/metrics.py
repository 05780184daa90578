"""Superclass accuracy across nesting sizes (paper §5, Figures 10-11, Tables 24-25).

Fine-class predictions are mapped to superclasses through a :class:`SuperclassMap`,
built by :meth:`SuperclassMap.from_hierarchy` from a hierarchy ``{class_id: superclass
name}`` (``DatasetBundle.hierarchy``, ``EmbeddingCache.hierarchy``,
:mod:`mrl_analysis.data.wordnet` or a user JSON file). Classes outside the chosen superclasses
can fall into one extra *reject* superclass, as in the paper's 31-way ImageNet setup
(30 WordNet superclasses + reject).

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
import plotly.express as px
import plotly.graph_objects as go

from mrl_analysis.data.hierarchy import SuperclassMap
from mrl_analysis.routing.oracle import check_scores, predictions


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


def superclass_accuracy(
    scores: np.ndarray,
    labels: np.ndarray,
    nesting: Sequence[int],
    smap: SuperclassMap,
    *,
    model: str = "MRL",
) -> pd.DataFrame:
    """Superclass metrics per size (Figure 10, Table 25), one row per size.

    Columns: ``model, truncate_dim, n_samples, fine_accuracy, superclass_accuracy,
    n_fine_errors, within_superclass_error_share``. All samples count, those of
    reject classes included (the paper's 31-way setup).
    """
    fine, same, _, sizes = _superclass_outcomes(scores, labels, nesting, smap)
    errors = (~fine).sum(axis=1)
    inside = (~fine & same).sum(axis=1)
    return pd.DataFrame(
        {
            "model": model,
            "truncate_dim": sizes,
            "n_samples": fine.shape[1],
            "fine_accuracy": fine.mean(axis=1),
            "superclass_accuracy": same.mean(axis=1),
            "n_fine_errors": errors,
            "within_superclass_error_share": np.divide(
                inside, errors, out=np.full(len(sizes), np.nan), where=errors > 0
            ),
        }
    )


def per_superclass_accuracy(
    scores: np.ndarray,
    labels: np.ndarray,
    nesting: Sequence[int],
    smap: SuperclassMap,
    *,
    model: str = "MRL",
) -> pd.DataFrame:
    """Metrics per size × true superclass (Figure 11), one row each.

    Columns: ``model, truncate_dim, superclass, n_samples, superclass_accuracy``
    (recall of the superclass), ``within_superclass_accuracy`` (top-1 restricted to the
    superclass's own fine classes), ``fine_accuracy, within_superclass_error_share``.
    Superclasses without samples are left out.
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
    return table[table["n_samples"] > 0].reset_index(drop=True)


def size_figure(
    table: pd.DataFrame,
    y: str,
    *,
    color: str = "model",
    title: str | None = None,
    y_title: str | None = None,
    percent: bool = True,
) -> go.Figure:
    """Lines of ``y`` against ``truncate_dim`` (log axis ticked at the sizes), one per
    ``color`` value; the shared shape of the superclass figures."""
    fig = px.line(
        table.sort_values("truncate_dim"),
        x="truncate_dim",
        y=y,
        color=color,
        markers=True,
        log_x=True,
        title=title,
        labels={"truncate_dim": "representation size", y: y_title or y.replace("_", " ")},
    )
    sizes = sorted(table["truncate_dim"].unique())
    fig.update_xaxes(tickvals=sizes, ticktext=[str(m) for m in sizes])
    if percent:
        fig.update_yaxes(tickformat=".0%")
    return fig


def superclass_accuracy_figure(table: pd.DataFrame) -> go.Figure:
    """Superclass accuracy vs size, one line per model (MRL vs FF; Figure 10)."""
    return size_figure(
        table,
        "superclass_accuracy",
        title="Superclass accuracy across representation sizes",
        y_title="superclass top-1 accuracy",
    )


def per_superclass_figure(
    table: pd.DataFrame,
    metric: str = "within_superclass_accuracy",
    superclasses: Sequence[str] | None = None,
) -> go.Figure:
    """One line per superclass (Figure 11) from :func:`per_superclass_accuracy`.

    The table should hold one model; ``superclasses`` picks which lines to draw.
    """
    if table["model"].nunique() > 1:
        raise ValueError("per_superclass_figure draws one model: filter the table first")
    if superclasses is not None:
        table = table[table["superclass"].isin(superclasses)]
    return size_figure(
        table,
        metric,
        color="superclass",
        title=f"Per-superclass {metric.replace('_', ' ')} ({table['model'].iloc[0]})",
    )


def within_superclass_error_figure(table: pd.DataFrame) -> go.Figure:
    """Share of fine-grained errors that stay in the true superclass, per size and model."""
    return size_figure(
        table,
        "within_superclass_error_share",
        title="Fine-grained errors that stay inside the true superclass",
        y_title="share of errors within superclass",
    )
