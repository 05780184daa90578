"""The paper's findings as checkable statements: one row format and one verdict rule.

Each theme states the findings it can measure (e.g. "MRL ≥ FF at small sizes") as rows of
:func:`finding`: the measured ``value`` of an effect (a difference or ratio whose sign or
size decides the claim), its interval, the ``threshold`` the claim needs the effect to pass,
and a verdict from :func:`verdict`:

* ``holds``: the whole interval lies on the claimed side of the threshold;
* ``does not hold``: the whole interval lies on the other side, or on the threshold (an
  effect that is exactly zero in every resample does not pass a threshold of zero);
* ``cannot be measured here``: the interval straddles the threshold (too few samples to
  tell), or the inputs the finding needs are missing (``value`` is NaN); ``reason`` says
  which, in one sentence.
"""

from __future__ import annotations

import math
from typing import Literal

import pandas as pd

HOLDS, FAILS, UNMEASURED = "holds", "does not hold", "cannot be measured here"
VERDICTS = (HOLDS, FAILS, UNMEASURED)
COLUMNS = [
    "finding",
    "claim",
    "effect",
    "value",
    "ci_low",
    "ci_high",
    "threshold",
    "verdict",
    "reason",
]
Direction = Literal["above", "below"]


def verdict(ci_low: float, ci_high: float, threshold: float, direction: Direction = "above") -> str:
    """The verdict of an effect whose interval is ``[ci_low, ci_high]`` (see module doc)."""
    if direction not in ("above", "below"):
        raise ValueError(f"direction must be 'above' or 'below', got {direction!r}")
    if any(math.isnan(v) for v in (ci_low, ci_high)):
        return UNMEASURED
    if direction == "above":
        return HOLDS if ci_low > threshold else FAILS if ci_high <= threshold else UNMEASURED
    return HOLDS if ci_high < threshold else FAILS if ci_low >= threshold else UNMEASURED


def finding(
    key: str,
    claim: str,
    effect: str,
    value: float,
    ci_low: float,
    ci_high: float,
    *,
    threshold: float = 0.0,
    direction: Direction = "above",
    reason: str | None = None,
) -> dict:
    """One row of a findings table; ``reason`` defaults to a sentence derived from the verdict.

    ``effect`` names the measured quantity (with its unit), e.g. "MRL − FF top-1 at d=8
    (fraction)"; the claim holds when the effect is ``direction`` of ``threshold``.
    """
    result = verdict(ci_low, ci_high, threshold, direction)
    if reason is None:
        side = "above" if direction == "above" else "below"
        if math.isnan(value):
            reason = "the inputs this finding needs are not in this study"
        elif result == UNMEASURED:
            reason = (
                f"the interval [{ci_low:.4g}, {ci_high:.4g}] straddles {threshold:.4g}: too "
                "few samples to tell"
            )
        else:
            interval = f"[{ci_low:.4g}, {ci_high:.4g}]"
            if result == HOLDS:
                reason = f"the interval {interval} lies entirely {side} {threshold:.4g}"
            else:
                other = "below" if direction == "above" else "above"
                reason = (
                    f"the whole interval {interval} lies {other} {threshold:.4g}: not too few "
                    "samples, these models show the opposite"
                )
    return {
        "finding": key,
        "claim": claim,
        "effect": effect,
        "value": float(value),
        "ci_low": float(ci_low),
        "ci_high": float(ci_high),
        "threshold": float(threshold),
        "verdict": result,
        "reason": reason,
    }


def unmeasured(key: str, claim: str, effect: str, reason: str) -> dict:
    """A finding the study at hand cannot measure (missing models, data or sizes)."""
    nan = float("nan")
    return finding(key, claim, effect, nan, nan, nan, reason=reason)


def findings_table(rows: list[dict]) -> pd.DataFrame:
    """Rows of :func:`finding` as a table in the standard column order, sorted by key."""
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.sort_values("finding", kind="stable").reset_index(drop=True)
