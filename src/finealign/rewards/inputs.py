"""Content fingerprints of the inputs a verb's settings name: the input half of an output's identity
(``data.identity``; ``docs/output-identity.md``).

A field marked ``reads="file"`` names a data file or folder (digested by ``data.identity.fingerprint_path``;
a data set name by its name); ``"model"`` a model spec (``models.fingerprint.model_fingerprint``);
``"scorer"`` a scorer spec (``rewards.base.scorer_fingerprint``: its model, token RM, follow-up file);
``"editor"`` ``local:MODEL`` or ``openai:MODEL``; ``"judge"`` a judge spec (named by ``judge_key``, with its
model's fingerprint). Files and models are fingerprinted a floor down (``models.inputs``, which a verb below
the rewards uses directly); the kinds that name a scorer, an editor or a judge are added here, above
``data`` and ``models``, because scorer and judge specs live here.
"""

from __future__ import annotations

from typing import Any, Callable

from ..data.identity import READS, identity_settings, reads_fields

__all__ = ["TRANSPORT_OPTIONS", "fingerprint_input", "input_fingerprints", "judge_key", "output_identity"]

#: options that change how a judge is asked, never what it answers: left out of ``judge_key``
TRANSPORT_OPTIONS = {"openai": ("timeout", "retries", "backoff", "max_backoff", "concurrency", "parse_retries"),
                     "pairwise": ("batch_size", "device")}
_VERDICT_DEFAULTS = {"openai": {"logprobs": "auto", "max_tokens": "16"}}


def judge_key(spec: str) -> str:
    """The judge spec with only what changes a verdict, in a fixed order: the key of a win-rate folder's settings
    and of its cached verdicts, so a rerun with other retries, timeout, backoff, concurrency or option order
    resumes. ``openai:URL/,retries=1,model=m`` -> ``openai:URL,logprobs=auto,max_tokens=16,model=m``."""
    from .base import parse_spec

    s = parse_spec(spec)
    drop = TRANSPORT_OPTIONS.get(s.kind, ())
    opts = {**_VERDICT_DEFAULTS.get(s.kind, {}), **{k: v for k, v in s.options.items() if k not in drop}}
    arg = (s.arg or "").rstrip("/") if s.kind == "openai" else (s.arg or "")
    head = f"{s.kind}:{arg}" if arg else s.kind
    return ",".join([head] + [f"{k}={opts[k]}" for k in sorted(opts)])


def _judge_fingerprint(spec: str, pull: bool) -> dict:
    from ..models.fingerprint import model_fingerprint
    from .base import parse_spec, scorer_fingerprint

    out = {"spec": judge_key(spec)}
    s = parse_spec(spec)
    if s.kind == "pairwise":
        out["model"] = model_fingerprint(s.arg or "smollm2-135m-instruct", pull=pull)
    elif s.kind != "openai":
        out.update({k: v for k, v in scorer_fingerprint(spec, pull=pull).items() if k != "spec"})
    return out


def _upper_kinds(kind: str, value: str, pull: bool) -> Any:
    """The fingerprint of an input of kind scorer, editor or judge (``models.inputs`` does file and model)."""
    from ..models.fingerprint import model_fingerprint

    if kind == "scorer":
        from .base import scorer_fingerprint

        return scorer_fingerprint(value, pull=pull)
    if kind == "editor":
        head, _, arg = value.partition(":")
        return {"spec": value, **({"model": model_fingerprint(arg, pull=pull)} if head == "local" and arg else {})}
    if kind == "judge":
        return _judge_fingerprint(value, pull)
    raise ValueError(f"unknown input kind {kind!r}; expected one of {', '.join(READS)}")


def fingerprint_input(kind: str, value: Any, *, pull: bool = True) -> Any:
    """The fingerprint of one input named by a setting of kind ``kind`` (``READS``); a list of them for a
    list value; None for None. ``pull=False``: a built-in model is named by its pinned package, not
    fetched (what a recipe's plan uses). Files and models: ``models.inputs``; scorers, editors, judges: here."""
    from ..models import inputs

    return inputs.fingerprint_input(kind, value, pull=pull, upper=_upper_kinds)


def input_fingerprints(cfg: Any, *, skip: Callable[[str, Any], bool] = lambda name, value: False,
                       pull: bool = True) -> dict:
    """{field: fingerprint} of every input ``cfg`` names (its ``reads`` fields), except those ``skip(name,
    value)`` leaves out (a recipe's earlier stage's output: covered by that stage's fingerprint)."""
    from ..models import inputs

    return inputs.input_fingerprints(cfg, skip=skip, pull=pull, upper=_upper_kinds)


def output_identity(cfg: Any, *, pull: bool = True, given: tuple[str, ...] = ()) -> dict:
    """The identity of the output ``cfg`` makes: its identity fields (``data.identity``), each input among
    them (a ``reads`` field) replaced by its fingerprint. ``given``: fields whose object the caller passed
    itself (a judge object given to ``run_winrate``): named by their spec only, nothing loaded or checked.
    Raises ``ModelError`` for a model the settings name that cannot load."""
    out = identity_settings(cfg)
    for name, kind in reads_fields(type(cfg)).items():
        if name in out and out[name] not in (None, "", []):
            value = getattr(cfg, name)
            out[name] = ({"spec": judge_key(value) if kind == "judge" else str(value)} if name in given
                         else fingerprint_input(kind, value, pull=pull))
    return out
