"""Scorer options as settings: one grammar, one typing, one error style for every scorer kind.

A scorer spec is ``KIND[:ARG][,key=value...]`` (``flr:smollm2-135m-instruct,mode=pmi,device=cuda``).
Each kind declares its options as a :class:`ScorerOptions` dataclass of :func:`~finealign.config.setting`
fields (the same mechanism as every verb's settings): the field's type types the value (``batch_size=8``
is an int, ``pool=mean`` one of its choices), its checks and ``validate`` check it, its help documents it.

The grammar, for every kind:

* a key is a field name; ``-`` and ``_`` are the same (``batch-size=8`` is ``batch_size=8``);
* a key given twice is an error;
* a list value is joined with ``+`` (``dims=relevance+correctness``);
* a boolean is ``true``/``false`` (``yes``/``no``, ``1``/``0``).

Every problem is one ``FinealignError`` line naming the kind and the option: ``scorer token-rm: unknown
option 'pooling' (did you mean pool?); valid options: pool, batch_size, ...`` or ``scorer flr: option
mode='magic': 'magic' is not one of loglik, pmi, reference, finetuned``.

Every model-backed scorer takes ``device`` (``auto``: CUDA when available, else the CPU; the default),
``dtype``, ``batch_size`` and ``max_length``.

An option that changes no score is marked on its field (``identity=False``: ``device``, ``batch_size``, FLR's
``strategy``), as every verb's settings are (``data.identity``): ``rewards.base.scorer_fingerprint`` leaves it
out of the scorer's identity, so a rerun on another device or batch size resumes an output it scored.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass

from ..config import DTYPES, Settings, normalize_dtype, positive, setting
from ..errors import ConfigError, FinealignError

BACKENDS = ("transformers", "vllm")


def _device(v) -> str | None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    s = str(v)
    if s in ("auto", "cpu", "cuda") or (s.startswith("cuda:") and s[5:].isdigit()):
        return None
    return f"{s!r} is not one of auto, cpu, cuda, cuda:N"


def _at_least_8(v) -> str | None:
    return None if v is None or v >= 8 else f"must be >= 8, got {v}"


def _non_negative_int(v) -> str | None:
    return None if v is None or v >= 0 else f"must be >= 0, got {v}"


@dataclass(kw_only=True)
class ScorerOptions(Settings):
    """The options of a scorer kind that takes none (``length``); the base of every kind's options."""


@dataclass(kw_only=True)
class ModelScorerOptions(ScorerOptions):
    """Options of every scorer backed by a local model."""

    device: str = setting("auto", identity=False, check=_device,
                          help="auto (CUDA when available, else the CPU) | cpu | cuda | cuda:N.")
    dtype: str = setting("float32", help=f"Weights' dtype: {' | '.join(DTYPES)} (fp32/bf16/fp16 accepted).")
    batch_size: int = setting(4, identity=False, check=positive, help="Responses per forward pass.")
    max_length: int | None = setting(None, check=_at_least_8, help="Token window (default: the model's); longer "
                                                                   "inputs lose their oldest tokens.")

    def validate(self):
        self.dtype = normalize_dtype(self.dtype)


@dataclass(kw_only=True)
class DirectOptions(ModelScorerOptions):
    """``direct:MODEL``: the response's own mean log-likelihood."""

    backend: str = setting("transformers", choices=BACKENDS, help="transformers | vllm.")


@dataclass(kw_only=True)
class FLROptions(DirectOptions):
    """``flr:MODEL``: follow-up likelihood as reward."""

    mode: str = setting("loglik", choices=("loglik", "pmi", "reference", "finetuned"),
                        help="loglik | pmi (minus the follow-ups' prior) | reference | finetuned.")
    followups: str | None = setting(None, help="A JSON/YAML follow-up file (default: the paper's set).")
    dims: list[str] | None = setting(None, help="Keep these dimensions only, joined with + (relevance+correctness).")
    strategy: str = setting("tree", identity=False, choices=("tree", "naive"),
                            help="tree (one pass per response) | naive (the same scores, slower).")


@dataclass(kw_only=True)
class TokenRMOptions(ModelScorerOptions):
    """``token-rm:PATH``: a trained token-level reward model."""

    pool: str = setting("sum", choices=("sum", "mean"), help="The score: sum or mean of the token rewards.")
    batch_size: int = setting(8, identity=False, check=positive, help="Responses per forward pass.")
    max_length: int = setting(1024, check=positive, help="Token window; longer inputs lose their oldest tokens.")


@dataclass(kw_only=True)
class SeqClsOptions(ModelScorerOptions):
    """``seqcls:MODEL``: a Hugging Face sequence classifier."""

    label: int | None = setting(None, check=_non_negative_int, help="The logit to read (default: the only one, or "
                                                                    "logit 1 - logit 0 with two).")
    batch_size: int = setting(8, identity=False, check=positive, help="Responses per forward pass.")


@dataclass(kw_only=True)
class DPOImplicitOptions(ModelScorerOptions):
    """``dpo-implicit:POLICY``: the implicit reward of a DPO policy against its reference."""

    ref: str | None = setting(None, help="The reference model (default: the LoRA base, or the model the DPO run "
                                         "started from).")
    beta: float = setting(0.1, check=positive, help="DPO's beta: reward = beta * log-ratio.")


def _key(k: str) -> str:
    return k.strip().replace("-", "_")


def option_fields(cls: type[ScorerOptions]) -> list[str]:
    """The option names of a kind, in declaration order."""
    return [f.name for f in dataclasses.fields(cls) if f.init]


def parse_options(kind: str, cls: type[ScorerOptions], raw: dict) -> ScorerOptions:
    """``cls`` built from ``raw`` ({key: value}, values as written in the spec or already typed).

    Raises ``FinealignError`` (one line, naming the kind and the option) for an unknown option, a value
    of the wrong type, or one its checks refuse."""
    names = option_fields(cls)
    values: dict = {}
    for k, v in raw.items():
        key = _key(k)
        if key not in names:
            near = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
            hint = f" (did you mean {near[0]}?)" if near else ""
            valid = ", ".join(names) if names else "none"
            raise FinealignError(f"scorer {kind}: unknown option {k.strip()!r}{hint}; valid options: {valid}")
        if key in values:
            raise FinealignError(f"scorer {kind}: option {key} given more than once")
        values[key] = _split_list(cls, key, v)
    try:
        return cls(**values)
    except ConfigError as e:
        shown = f"={raw.get(e.field, values.get(e.field))!r}" if e.field in values else ""
        raise FinealignError(f"scorer {kind}: option {e.field}{shown}: {e.problem}") from None


def _split_list(cls, key: str, value):
    """A ``+``-joined string for a list field (``dims=a+b``) -> its items."""
    hint = typing.get_type_hints(cls).get(key)
    if isinstance(value, str) and "list" in str(hint):
        return [x.strip() for x in value.split("+") if x.strip()]
    return value


def options_dict(opts: ScorerOptions) -> dict:
    """The typed values of ``opts`` as keyword arguments."""
    return {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts) if f.init}


def describe(cls: type[ScorerOptions]) -> list[tuple[str, str, str]]:
    """``[(option, default, help)]`` of a kind's options (for docs and ``--help`` texts)."""
    out = []
    for f in dataclasses.fields(cls):
        if f.init:
            default = "" if f.default is dataclasses.MISSING or f.default is None else str(f.default)
            out.append((f.name, default, (f.metadata or {}).get("help", "")))
    return out
