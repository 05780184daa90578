"""Head kinds and model display names: the one list the library uses.

* ``mrl``: one linear head per nesting size (Matryoshka Representation Learning);
* ``mrl-e``: one shared head whose first ``m`` columns serve size ``m`` (MRL-Efficient);
* ``ff``: a fixed-feature baseline trained at one size ``k`` (``FF-k``).
"""

from __future__ import annotations

import re
from typing import Literal

HeadKind = Literal["mrl", "mrl-e", "ff"]
HEAD_KINDS: tuple[str, ...] = ("mrl", "mrl-e", "ff")
#: Kinds whose every prefix is a representation of its own (MRL and MRL-E).
NESTED_KINDS: tuple[str, ...] = ("mrl", "mrl-e")

_DISPLAY = {"mrl": "MRL", "mrl-e": "MRL-E", "mrle": "MRL-E", "mrl_e": "MRL-E", "ff": "FF"}
_FF_K = re.compile(r"ff[-_ ]?\d+")


def check_kind(kind: str) -> str:
    """``kind`` if it is one of :data:`HEAD_KINDS`, else a ValueError naming them."""
    if kind not in HEAD_KINDS:
        raise ValueError(f"unknown head kind {kind!r}: use one of {HEAD_KINDS}")
    return kind


def model_display_name(model: str | None) -> str:
    """``"mrl"`` -> ``"MRL"``, ``"mrl-e"`` -> ``"MRL-E"``, ``"FF-64"`` / ``"ff"`` -> ``"FF"``.

    Every FF-k model maps to ``"FF"`` so that the independently trained FF models form one
    line in a figure; other names are returned unchanged.
    """
    if model is None:
        return ""
    key = str(model).strip().lower()
    if key in _DISPLAY:
        return _DISPLAY[key]
    if _FF_K.fullmatch(key):
        return "FF"
    return str(model)
