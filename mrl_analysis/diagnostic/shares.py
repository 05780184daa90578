"""How much of the embedding the first m dimensions hold: shares of norm and of variance.

Three quantities per size m (fractions in [0, 1]); the first two are ratios of sample means:

* ``norm``: ``mean ||x[:m]||^2 / mean ||x||^2``, the share of the squared norm (the energy
  inner products see) in the first m dimensions;
* ``variance``: ``sum_{j<m} var(x_j) / sum_j var(x_j)``, the share of the total variance
  (what distinguishes samples);
* ``empty``: the share of samples whose first m dims are all zero (dead ReLU units make
  this common at small m): such a prefix has no direction, so no cosine neighbours.

``variant="prefix"`` is the first m dimensions, with a bootstrap interval over the samples
(both means of a ratio from the same resamples); for ``norm`` and ``variance``,
``variant="pca"`` is the most any m
orthogonal directions can hold (the top-m eigenvalues of the uncentered second-moment
matrix for ``norm``, of the covariance for ``variance``): the ceiling prefixes are measured
against. A Matryoshka embedding puts close to the ceiling into its first dimensions; an
ordinary one spreads both evenly (about m / d).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mrl_analysis.core.checks import check_features, check_int
from mrl_analysis.core.stats import LEVEL, N_BOOT, bootstrap_means, percentile_interval

SHARE_COLUMNS = ["model", "quantity", "variant", "truncate_dim", "value", "ci_low", "ci_high"]
QUANTITIES: tuple[str, ...] = ("norm", "variance", "empty")


def _cumulative(squares: np.ndarray, sizes: list[int]) -> np.ndarray:
    """``[G, N]`` sums of ``squares [N, d]`` over the first m columns, for every size."""
    cum = np.cumsum(squares, axis=1, dtype=np.float64)
    return cum[:, np.asarray(sizes) - 1].T


def energy_shares(
    features: np.ndarray,
    sizes: Sequence[int],
    *,
    model: str = "model",
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
) -> pd.DataFrame:
    """Shares of norm and variance in the first m dims (and the PCA ceiling) per size.

    ``sizes`` (the full size ``d`` is added when missing) index the columns of
    ``features [N, d]``; columns :data:`SHARE_COLUMNS`.
    """
    x = check_features(features).astype(np.float64)
    n, d = x.shape
    if n < 2:
        raise ValueError("shares need at least 2 samples")
    grid = sorted({check_int(m, "sizes", low=1, high=d) for m in sizes} | {d})
    centred = x - x.mean(axis=0)
    sums = {"norm": _cumulative(x * x, grid), "variance": _cumulative(centred**2, grid)}
    spectra = {
        "norm": np.linalg.eigvalsh(x.T @ x / n)[::-1],
        "variance": np.linalg.eigvalsh(centred.T @ centred / n)[::-1],
    }
    rows = []
    for i, quantity in enumerate(QUANTITIES[:2]):
        boot = bootstrap_means(sums[quantity], n_boot, level=level, seed=seed + i)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = boot.mean / boot.mean[-1]
            low, high = percentile_interval(boot.replicates / boot.replicates[-1:], level)
        ceiling = np.cumsum(np.clip(spectra[quantity], 0, None))
        ceiling = ceiling[np.asarray(grid) - 1] / ceiling[-1]
        for g, m in enumerate(grid):
            rows.append([model, quantity, "prefix", m, share[g], low[g], high[g]])
            rows.append([model, quantity, "pca", m, ceiling[g], np.nan, np.nan])
    # The prefix of a sample is empty until its first nonzero dimension.
    first_nonzero = np.where((x != 0).any(axis=1), (x != 0).argmax(axis=1), d)
    empty = (first_nonzero[None, :] >= np.asarray(grid)[:, None]).astype(np.float64)
    boot = bootstrap_means(empty, n_boot, level=level, seed=seed + 2)
    low, high = boot.interval()
    for g, m in enumerate(grid):
        rows.append([model, "empty", "prefix", m, boot.mean[g], low[g], high[g]])
    return pd.DataFrame(rows, columns=SHARE_COLUMNS)
