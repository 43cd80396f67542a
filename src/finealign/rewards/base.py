"""The scorer interface that holds the pipeline together.

A *scorer* takes a batch of (prompt, response) and returns one float per response. A *token
scorer* also returns one float per response token. Every consumer (labeling, evaluation, PPO,
TRL's ``reward_funcs``) takes any scorer.

Scorers are named by a spec string ``KIND[:ARG][,key=value...]``, for example
``flr:smollm2-135m-instruct,mode=pmi``, ``direct:tiny-random``, ``token-rm:runs/rm,pool=mean``,
``length``. ``load_scorer(spec)`` builds one; ``register_scorer(KIND)`` adds a kind.
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..data.records import Prompt
from ..errors import FinealignError
from .options import ScorerOptions, option_fields, options_dict, parse_options


@dataclass(frozen=True)
class TokenScores:
    """Per-token rewards of one response.

    ``token_ids``: the response's tokens (T,) under the scorer's tokenizer (-1 where it has none);
    ``offsets``: each token's (start, end) character span in the response text, the stop token (end
    of turn) as the zero-width ``(len, len)``; ``rewards``: (T,) floats, causal (docs/token-rewards.md).
    """

    token_ids: list[int]
    offsets: list[tuple[int, int]]
    rewards: list[float]


class Scorer(abc.ABC):
    """One float per (prompt, response); higher is better."""

    name: str = "scorer"

    @abc.abstractmethod
    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        """Scores of ``len(responses)`` responses; ``prompts[i]`` is the context of ``responses[i]``."""

    def close(self) -> None:  # release models; optional
        pass


class TokenScorer(Scorer):
    """A scorer that also scores every response token, under the token-reward contract
    (``rewards.contract``, docs/token-rewards.md): causal rewards, the stop unit ``(len, len)`` last,
    carrying what is judged on the whole response.

    ``token_sum_is_score``: whether the token rewards add up to ``score`` (False for a mean-pooled
    score, such as ``direct``'s mean log-probability or a token RM with ``pool=mean``).
    """

    token_sum_is_score: bool = True

    @abc.abstractmethod
    def score_tokens(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[TokenScores]:
        """Per-token rewards for each response."""


_REGISTRY: dict[str, Callable[..., Scorer]] = {}
_OPTIONS: dict[str, type] = {}  # kind -> its ScorerOptions dataclass (rewards/options.py)


def register_scorer(kind: str, options: type | None = None):
    """Decorator: ``@register_scorer("flr", options=FLROptions)`` on a factory ``f(arg: str | None, **options)
    -> Scorer``.

    ``options``: the kind's :class:`~finealign.rewards.options.ScorerOptions` dataclass; the factory then
    gets every option typed and checked (defaults included), and a bad option is one error line naming it.
    Without it the factory gets the spec's options as strings, as written."""

    def deco(factory):
        _REGISTRY[kind] = factory
        if options is not None:
            _OPTIONS[kind] = options
        else:
            _OPTIONS.pop(kind, None)
        return factory

    return deco


def scorer_options(kind: str) -> type | None:
    """The options dataclass of a scorer kind (None: a kind registered without one)."""
    _ensure_builtin_kinds()
    return _OPTIONS.get(kind)


@dataclass(frozen=True)
class ScorerSpec:
    kind: str
    arg: str | None = None
    options: dict = field(default_factory=dict)


def parse_spec(spec: str) -> ScorerSpec:
    """``"flr:model,mode=pmi,batch_size=8"`` -> ScorerSpec("flr", "model", {"mode": "pmi", "batch_size": "8"})."""
    if not spec or not spec.strip():
        raise FinealignError("empty scorer spec")
    head, *opts = spec.split(",")
    kind, _, arg = head.partition(":")
    options = {}
    for o in opts:
        k, eq, v = o.partition("=")
        if not eq or not k.strip():
            raise FinealignError(f"scorer spec {spec!r}: option {o!r} is not key=value")
        if k.strip() in options:
            raise FinealignError(f"scorer spec {spec!r}: option {k.strip()} given more than once")
        options[k.strip()] = v.strip()
    return ScorerSpec(kind.strip(), arg.strip() or None, options)


def _ensure_builtin_kinds() -> None:
    # Importing the modules registers their kinds; a missing optional module is not an error here.
    import importlib

    for mod in ("model_scorers", "seqcls", "token_rm", "judge", "sim", "dpo_implicit"):
        try:
            importlib.import_module(f"finealign.rewards.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"finealign.rewards.{mod}":
                raise


def check_spec(spec: str) -> None:
    """Check a scorer spec without loading a model: its syntax, its kind and, for a kind with an options
    dataclass, every option. Raises ``FinealignError`` (one line) as ``load_scorer`` would."""
    _ensure_builtin_kinds()
    s = parse_spec(spec)
    if s.kind not in _REGISTRY:
        raise FinealignError(f"unknown scorer {spec!r}: kind {s.kind!r} is not one of {', '.join(sorted(_REGISTRY))}")
    if s.kind in _OPTIONS:
        parse_options(s.kind, _OPTIONS[s.kind], s.options)


def load_scorer(spec: str | Scorer, **overrides) -> Scorer:
    """Build a scorer from a spec string (or return a scorer unchanged).

    ``overrides``: options (they win over the spec's) and objects the factory takes (``model=``,
    ``tokenizer=``). Raises ``FinealignError`` for an unknown kind or a bad option (one line naming it,
    see :mod:`finealign.rewards.options`)."""
    if isinstance(spec, Scorer):
        return spec
    _ensure_builtin_kinds()
    s = parse_spec(spec)
    if s.kind not in _REGISTRY:
        raise FinealignError(f"unknown scorer {spec!r}: kind {s.kind!r} is not one of {', '.join(sorted(_REGISTRY))}")
    cls = _OPTIONS.get(s.kind)
    if cls is None:
        return _REGISTRY[s.kind](s.arg, **{**s.options, **overrides})
    names = set(option_fields(cls))
    objects = {k: v for k, v in overrides.items() if k.replace("-", "_") not in names}
    given = {**s.options, **{k: v for k, v in overrides.items() if k.replace("-", "_") in names}}
    return _REGISTRY[s.kind](s.arg, **options_dict(parse_options(s.kind, cls, given)), **objects)


class LengthScorer(Scorer):
    """The baseline every reward must beat: longer response wins (characters)."""

    name = "length"

    def score(self, prompts, responses):
        return [float(len(r)) for r in responses]


@register_scorer("length", options=ScorerOptions)
def _length(arg=None, **_):
    return LengthScorer()


def _identity_options(kind: str, options: dict) -> dict:
    """The options of a spec that may change a score: those of its kind's options dataclass not marked
    ``identity=False`` (``rewards.options``: device, batch size, FLR's strategy); a kind registered without
    an options dataclass keeps all of them."""
    from ..data.identity import non_identity_fields

    cls = scorer_options(kind)
    drop = non_identity_fields(cls) if cls is not None else frozenset()
    return {k: v for k, v in options.items() if k.strip().replace("-", "_") not in drop}


def scorer_fingerprint(spec: str | Scorer, *, pull: bool = True) -> dict:
    """What a scorer is, for the manifest of an output it scores (``data.manifest``): its spec (less
    the options marked as changing no score: batch size, device, FLR's strategy) and a fingerprint of every
    file it reads (the model, a token RM's folder and its base model, an FLR follow-up file). A
    scorer object without a spec gives its name only. ``pull``: as for ``model_fingerprint``."""
    from ..data.identity import fingerprint_path, is_model_file
    from ..models.fingerprint import model_fingerprint

    if isinstance(spec, Scorer):
        return {"spec": getattr(spec, "name", type(spec).__name__)}
    s = parse_spec(spec)
    opts = ",".join(f"{k}={v}" for k, v in sorted(_identity_options(s.kind, s.options).items()))
    out: dict = {"spec": s.kind + (f":{s.arg}" if s.arg else "") + (f",{opts}" if opts else "")}
    if s.kind == "length":
        return out
    if s.kind == "token-rm" and s.arg:
        out["token_rm"] = fingerprint_path(s.arg, only=is_model_file)  # its weights, not its evaluations
        cfg = Path(s.arg).expanduser() / "token_rm_config.json"
        try:
            base = json.loads(cfg.read_text(encoding="utf-8")).get("base_model")
        except (OSError, ValueError):
            base = None
        if base:
            out["base_model"] = model_fingerprint(base, pull=pull)
    elif s.kind in ("flr", "direct", "seqcls") or (s.arg and Path(s.arg).expanduser().exists()):
        out["model"] = model_fingerprint(s.arg or "smollm2-135m-instruct", pull=pull)
    for key in ("followups",):
        if s.options.get(key):
            out[key] = fingerprint_path(s.options[key])
    return out
