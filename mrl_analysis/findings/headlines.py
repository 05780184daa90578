"""What notebook 07 states: one sentence per finding, from the findings table.

A finding that holds is stated with its effect and interval; one that does not hold, or
cannot be measured here, is stated with its ``reason`` (one sentence, from the theme that
measured it), so the notebook says *why* for every finding that does not hold.
"""

from __future__ import annotations

import math

import pandas as pd

from mrl_analysis.core.findings import COLUMNS, HOLDS, UNMEASURED


def _number(value: float) -> str:
    return f"{value:+.4g}"


def finding_lines(table: pd.DataFrame) -> pd.DataFrame:
    """``finding``, ``verdict`` and ``text`` (one sentence) per row of a findings table."""
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"not a findings table: columns {missing} are missing")
    texts = []
    for row in table.itertuples(index=False):
        head = f"({row.finding}) {row.claim}: {row.verdict}"
        if math.isnan(row.value):
            texts.append(f"{head}: {row.reason}.")
            continue
        numbers = (
            f"{row.effect} = {_number(row.value)} "
            f"[{_number(row.ci_low)}, {_number(row.ci_high)}], threshold {row.threshold:.4g}"
        )
        why = "" if row.verdict == HOLDS else f"; why: {row.reason}"
        texts.append(f"{head} ({numbers}){why}.")
    return pd.DataFrame(
        {"finding": table["finding"], "verdict": table["verdict"], "text": texts}
    ).reset_index(drop=True)


def verdict_counts(table: pd.DataFrame) -> str:
    """``"5 hold, 2 do not, 1 cannot be measured here"``: the table's verdicts in one line."""
    counts = table["verdict"].value_counts()
    holds = int(counts.get(HOLDS, 0))
    unmeasured = int(counts.get(UNMEASURED, 0))
    fails = len(table) - holds - unmeasured
    return (
        f"{holds} of {len(table)} findings hold, {fails} do not, "
        f"{unmeasured} cannot be measured here"
    )


def findings_text(table: pd.DataFrame) -> str:
    """The findings table as a few lines of plain text (what ``mrl-analysis demo`` ends with):
    the verdict counts, then per finding its verdict, effect with interval, and claim."""
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"not a findings table: columns {missing} are missing")
    lines = [verdict_counts(table)]
    for row in table.itertuples(index=False):
        if math.isnan(row.value):
            numbers = "-"
        else:
            numbers = f"{_number(row.value)} [{_number(row.ci_low)}, {_number(row.ci_high)}]"
        lines.append(f"({row.finding}) {row.verdict:<23}  {numbers:<28}  {row.claim}")
    return "\n".join(lines)
