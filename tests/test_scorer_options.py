"""Scorer options as settings (rewards/options.py): one grammar, one typing, one error style for every
scorer kind, and ``device=auto`` by default for every model-backed scorer."""

from __future__ import annotations

import dataclasses

import pytest

from finealign.errors import FinealignError
from finealign.rewards.base import _OPTIONS, _REGISTRY, _ensure_builtin_kinds, load_scorer, register_scorer
from finealign.rewards.options import ModelScorerOptions, ScorerOptions, option_fields, parse_options

MODEL_BACKED = ("direct", "flr", "token-rm", "seqcls", "dpo-implicit")


def _kinds_with_options():
    _ensure_builtin_kinds()
    return sorted(_OPTIONS)


@pytest.mark.parametrize("kind", _kinds_with_options())
def test_unknown_option_is_one_line_naming_it_and_the_valid_ones(kind):
    cls = _OPTIONS[kind]
    with pytest.raises(FinealignError) as e:
        load_scorer(f"{kind}:x,no_such_option=1")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"scorer {kind}: unknown option 'no_such_option'")
    for name in option_fields(cls):
        assert name in msg.split("valid options:")[1]


def test_every_model_backed_kind_declares_device_and_defaults_to_auto():
    _ensure_builtin_kinds()
    for kind in MODEL_BACKED:
        cls = _OPTIONS.get(kind)
        assert cls is not None and issubclass(cls, ModelScorerOptions), kind
        assert cls().device == "auto", kind
        assert {"device", "dtype", "batch_size", "max_length"} <= set(option_fields(cls)), kind


@pytest.fixture
def probe():
    """A scorer kind that records what its factory got."""
    got = {}

    @dataclasses.dataclass(kw_only=True)
    class ProbeOptions(ModelScorerOptions):
        flag: bool = False
        dims: list[str] | None = None
        beta: float = 0.5

    @register_scorer("probe-kind", options=ProbeOptions)
    def _probe(arg=None, marker=None, **opts):
        got.update(opts, arg=arg, marker=marker)
        return object()

    yield got
    _REGISTRY.pop("probe-kind", None)
    _OPTIONS.pop("probe-kind", None)


def test_options_are_typed_defaulted_and_overridable(probe):
    load_scorer("probe-kind:m,batch-size=16,flag=yes,dims=a+b,beta=2,dtype=bf16", marker="obj", device="cpu")
    assert probe["batch_size"] == 16 and isinstance(probe["batch_size"], int)
    assert probe["flag"] is True and probe["dims"] == ["a", "b"] and probe["beta"] == 2.0
    assert probe["dtype"] == "bfloat16" and probe["device"] == "cpu"  # an option override wins
    assert probe["marker"] == "obj" and probe["arg"] == "m"  # a non-option override reaches the factory as is
    assert probe["max_length"] is None


@pytest.mark.parametrize("opts, want", [
    ("batch_size=two", r"^scorer probe-kind: option batch_size='two': expected int"),
    ("batch_size=0", r"^scorer probe-kind: option batch_size='0': must be positive"),
    ("flag=maybe", r"^scorer probe-kind: option flag='maybe': expected bool"),
    ("device=gpu", r"^scorer probe-kind: option device='gpu': 'gpu' is not one of auto, cpu, cuda"),
    ("max_length=4", r"^scorer probe-kind: option max_length='4': must be >= 8"),
    ("bta=1", r"^scorer probe-kind: unknown option 'bta' \(did you mean beta\?\)"),
    ("beta=1,beta=2", r"option beta given more than once"),
])
def test_bad_values_are_one_line_naming_the_option(probe, opts, want):
    with pytest.raises(FinealignError, match=want) as e:
        load_scorer(f"probe-kind:m,{opts}")
    assert "\n" not in str(e.value)


def test_device_accepts_an_indexed_gpu():
    assert parse_options("x", ModelScorerOptions, {"device": "cuda:1"}).device == "cuda:1"


def test_kind_without_options_refuses_any():
    with pytest.raises(FinealignError, match=r"^scorer length: unknown option 'foo'"):
        load_scorer("length,foo=1")
    assert issubclass(_OPTIONS["length"], ScorerOptions)


def test_token_rm_scorer_loads_on_the_auto_device(tmp_path):
    import torch

    from finealign.models.token_rm import new_token_rm

    model, tok = new_token_rm("tiny-random", mode="full", top_layers=1, seed=0)
    model.save(tmp_path / "rm", tok)
    s = load_scorer(f"token-rm:{tmp_path / 'rm'}")
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert next(s.model.parameters()).device.type == want
    assert s.pool == "sum" and s.batch_size == 8 and s.max_length == 1024


def test_options_that_change_no_score_are_marked_and_left_out_of_the_identity():
    """The scorer's identity (``scorer_fingerprint``) drops exactly the options marked ``identity=False`` on
    the kind's options dataclass (no hand-kept list), in either spelling of the key."""
    from finealign.data.identity import non_identity_fields
    from finealign.rewards.base import scorer_fingerprint
    from finealign.rewards.options import FLROptions, TokenRMOptions

    assert non_identity_fields(FLROptions) == {"device", "batch_size", "strategy"}
    assert non_identity_fields(TokenRMOptions) == {"device", "batch_size"}
    base = "flr:tiny-random,mode=pmi"
    spec = scorer_fingerprint(base, pull=False)["spec"]
    for extra in (",batch_size=2", ",batch-size=2", ",device=cpu", ",strategy=naive"):
        assert scorer_fingerprint(base + extra, pull=False)["spec"] == spec, extra
    for other in ("flr:tiny-random,mode=loglik", base + ",dtype=bfloat16", base + ",max_length=64"):
        assert scorer_fingerprint(other, pull=False)["spec"] != spec, other
