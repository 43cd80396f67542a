"""Content fingerprints of the data files and models a verb's settings name: the lower half of an output's
input identity (``data.identity``; ``docs/output-identity.md``).

A field marked ``reads="file"`` names a data file or folder (``data.identity.data_fingerprint``); ``"model"`` a
model spec (``models.fingerprint.model_fingerprint``). The kinds that name a scorer, an editor or a judge are
fingerprinted a floor up, by ``rewards.inputs``, which passes its own ``upper`` function to these: a verb below
the rewards (``sim make``) reads its files and models here without importing them.
"""

from __future__ import annotations

from typing import Any, Callable

from ..data.identity import data_fingerprint, reads_fields
from .fingerprint import model_fingerprint

__all__ = ["UpperKinds", "fingerprint_input", "input_fingerprints"]

#: ``upper(kind, value, pull)``: the fingerprint of an input of a kind this floor does not know
UpperKinds = Callable[[str, str, bool], Any]


def fingerprint_input(kind: str, value: Any, *, pull: bool = True, upper: UpperKinds | None = None) -> Any:
    """The fingerprint of one input named by a setting of kind ``kind`` (``data.identity.READS``); a list of them
    for a list value; None for None. ``pull=False``: a built-in model is named by its pinned package, not fetched
    (what a recipe's plan uses). ``upper``: the fingerprint of the other kinds. Raises ``ValueError`` for a kind
    that neither this floor nor ``upper`` knows, ``ModelError`` for a model that cannot load (``pull=True``)."""
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)):
        return [fingerprint_input(kind, v, pull=pull, upper=upper) for v in value]
    value = str(value)
    if kind == "file":
        return data_fingerprint(value)
    if kind == "model":
        return model_fingerprint(value, pull=pull)
    if upper is None:
        raise ValueError(f"input kind {kind!r} is fingerprinted by rewards.inputs, not models.inputs")
    return upper(kind, value, pull)


def input_fingerprints(cfg: Any, *, skip: Callable[[str, Any], bool] = lambda name, value: False,
                       pull: bool = True, upper: UpperKinds | None = None) -> dict:
    """{field: fingerprint} of every input ``cfg`` names (its ``reads`` fields), except those ``skip(name,
    value)`` leaves out (a recipe's earlier stage's output: covered by that stage's fingerprint)."""
    out = {}
    for name, kind in reads_fields(type(cfg)).items():
        value = getattr(cfg, name)
        if value in (None, "", []) or skip(name, value):
            continue
        out[name] = fingerprint_input(kind, value, pull=pull, upper=upper)
    return out
