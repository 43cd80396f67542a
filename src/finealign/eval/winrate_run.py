"""The body of ``run_winrate`` (see ``finealign.eval.winrate`` for the API, files and settings)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..core import winrate as wr
from ..data.io import iter_objects, write_json, write_jsonl, write_text_atomic
from ..data.records import FieldError, Prompt, check_prompt, check_text
from ..errors import ConfigError, DataError, FinealignError
from ..rewards.inputs import judge_key
from .judges import Judge, VerdictCache, judge_orders, load_judge
from .winrate_config import JudgeCheck, WinrateConfig, WinrateResult

FILES = ("results.json", "results.md", "pairs.jsonl", "judgments.jsonl", "outputs.jsonl", "reference_outputs.jsonl",
         "outputs.jsonl.manifest.json", "reference_outputs.jsonl.manifest.json", "settings.json")
VERB = "eval winrate"


@dataclass(frozen=True)
class Output:
    """One side's response to one prompt; ``where`` names its source (``file:line``)."""

    prompt: Prompt
    text: str
    where: str


def prompt_key(prompt: Prompt) -> str:
    """A canonical key: a single user message counts as its text (AlpacaEval instructions match TRL prompts)."""
    if isinstance(prompt, list) and len(prompt) == 1 and prompt[0].get("role") == "user":
        prompt = prompt[0].get("content")
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def read_outputs(path: Path) -> list[Output]:
    """Outputs from TRL ``prompt/completion`` JSONL/JSON or AlpacaEval's JSON list of ``instruction/output``.

    One output per prompt: a repeated prompt raises ``DataError`` naming both lines.
    """
    out: list[Output] = []
    first: dict[str, int] = {}
    for line, obj in iter_objects(path):
        try:
            if "prompt" in obj:
                prompt, text = check_prompt(obj.get("prompt")), check_text(obj.get("completion"), "completion",
                                                                           allow_empty=True)
            elif "instruction" in obj:
                prompt = check_prompt(obj.get("instruction"), "instruction")
                text = check_text(obj.get("output"), "output", allow_empty=True)
            else:
                raise FieldError("prompt", "missing (expected TRL prompt/completion or AlpacaEval instruction/output)")
        except FieldError as e:
            raise DataError(path, line, e.field, e.problem) from None
        k = prompt_key(prompt)
        if k in first:
            raise DataError(path, line, "prompt", f"the same prompt as line {first[k]}: give one output per prompt")
        first[k] = line
        out.append(Output(prompt, text, f"{path}:{line}"))
    if not out:
        raise DataError(path, None, None, "no outputs in file")
    return out


def _short(prompt: Prompt, n: int = 60) -> str:
    text = prompt if isinstance(prompt, str) else " / ".join(m.get("content", "") for m in prompt)
    text = " ".join(text.split())
    return repr(text if len(text) <= n else text[:n] + "...")


def match_sides(outputs: list[Output], reference: list[Output], names: tuple[str, str]) -> list[tuple[Output, Output]]:
    """Pair both sides by prompt, in the order of ``outputs``; the prompt sets must be equal.

    Raises ``FinealignError`` with the counts and the first mismatch on each side.
    """
    ref = {prompt_key(o.prompt): o for o in reference}
    keys = {prompt_key(o.prompt) for o in outputs}
    missing = [o for o in outputs if prompt_key(o.prompt) not in ref]
    extra = [o for o in reference if prompt_key(o.prompt) not in keys]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of {len(outputs)} prompts of {names[0]} have no {names[1]} output "
                         f"(first: {missing[0].where} {_short(missing[0].prompt)})")
        if extra:
            parts.append(f"{len(extra)} of {len(reference)} prompts of {names[1]} have no {names[0]} output "
                         f"(first: {extra[0].where} {_short(extra[0].prompt)})")
        raise FinealignError("the prompts of the two sides do not match: " + "; ".join(parts))
    return [(o, ref[prompt_key(o.prompt)]) for o in outputs]


# ------------------------------------------------------------------------------------------ setup


def _settings(cfg: WinrateConfig, judge_given: bool = False) -> dict:
    """The identity of the win rate ``cfg`` makes (``data.identity.output_identity``): the settings that
    change the generated outputs or the verdicts, with the content fingerprints of the prompts file and of
    the models (a prompts file edited in place, or new weights at the same path, make another win rate).
    The judge is named by ``judges.judge_key`` (how it is asked aside). ``judge_given``: the caller passed the
    judge object, so its spec is a name only (no model to check or digest). Raises ``ModelError`` for a model
    or judge model that cannot load."""
    from ..rewards.inputs import output_identity

    return output_identity(cfg, given=("judge",) if judge_given else ())


def prepare_out(cfg: WinrateConfig, settings: dict | None = None) -> Path:
    """Create ``cfg.out``; with ``overwrite`` delete this command's files; refuse a folder made by another verb,
    or with other settings or inputs (naming them).

    The settings are recorded (``settings.json``) by ``claim_out`` just before the first resumable write.
    ``settings``: the identity (``_settings``), computed here when not given.
    """
    from ..data.identity import check_verb, differences

    out = Path(cfg.out)
    check_verb(out, VERB, claim=False)
    new = settings if settings is not None else _settings(cfg)  # a model that cannot load fails here, first
    out.mkdir(parents=True, exist_ok=True)
    if cfg.overwrite:
        for name in FILES:
            (out / name).unlink(missing_ok=True)
    sfile = out / "settings.json"
    if sfile.exists():
        try:
            old = json.loads(sfile.read_text(encoding="utf-8"))
        except ValueError:
            raise DataError(sfile, None, None, "not valid JSON; delete it or pass --overwrite") from None
        diff = differences(old, new, keys=list(new))
        if diff:
            first = next(k for k in new if json.dumps(old.get(k), sort_keys=True) != json.dumps(new[k], sort_keys=True))
            raise ConfigError(first.replace("_", "-"), f"{out} holds a win rate made with other settings or inputs ("
                              + "; ".join(diff) + "); use another --out, or --overwrite to start over")
    return out


def claim_out(cfg: WinrateConfig, settings: dict | None = None) -> None:
    """Record the settings (``settings``, else ``_settings(cfg)``) in ``out/settings.json`` (once), before
    anything resumable is written there."""
    from ..data.identity import check_verb

    sfile = Path(cfg.out) / "settings.json"
    if not sfile.exists():
        settings = settings if settings is not None else _settings(cfg)
        check_verb(cfg.out, VERB)
        write_json(sfile, settings)


def _generate(cfg: WinrateConfig, spec: str, path: Path, stage: str, report, settings: dict) -> list[Output]:
    """Greedy (or sampled) outputs of ``spec`` on ``cfg.prompts`` into ``path``, one per prompt: the generate
    job (``generate_job.run_generate_job``, transformers backend) with the ``ANSWERS`` layout. ``path`` gets
    generate's manifest (``PATH.manifest.json``: the model's fingerprint and the sampling settings), so a
    rerun with another model or other settings is refused even where ``settings.json`` is gone; answers
    written before they had a manifest are adopted (``settings.json``, checked by ``prepare_out``, vouches
    for them)."""
    from ..data.manifest import manifest_path
    from ..data.prompts import read_prompts
    from ..generate_job import ANSWERS, Sampling, run_generate_job
    from ..generation import TransformersBackend

    items = read_prompts(cfg.prompts)  # a bad prompts file fails before the folder is claimed
    claim_out(cfg, settings)
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                        seed=cfg.seed)
    backend = TransformersBackend(spec, k=1, sampling=sampling, batch_size=cfg.batch_size, dtype=cfg.dtype,
                                  device=cfg.device)
    run_generate_job(backend, cfg.prompts, path, k=1, sampling=sampling, layout=ANSWERS,
                     adopt=path.is_file() and not manifest_path(path).exists(),
                     on_progress=lambda done, total, _info: report(stage, done, total))
    del backend  # the model is freed before the other side's is loaded
    by_id = {}
    for line, o in iter_objects(path):
        by_id[str(o["id"])] = Output(o["prompt"], o["completion"], f"{path}:{line}")
    return [by_id[p.id] for p in items]


def _side(cfg: WinrateConfig, out: Path, which: str, report, settings: dict) -> list[Output]:
    if which == "model":
        if cfg.outputs is not None:
            return read_outputs(Path(cfg.outputs))
        return _generate(cfg, cfg.model, out / "outputs.jsonl", "generate-model", report, settings)
    if cfg.reference_outputs is not None:
        return read_outputs(Path(cfg.reference_outputs))
    return _generate(cfg, cfg.reference, out / "reference_outputs.jsonl", "generate-reference", report, settings)


def _cut(text: str, n: int | None) -> str:
    return text if n is None else text[:n]


# ------------------------------------------------------------------------------------------ judging


def check_judge(judge: Judge, benchmark: str, *, judge_id: str, limit: int | None = 100,
                data_dir: Path | None = None, max_chars: int | None = None, preference: str = "hard", seed: int = 0,
                n_boot: int = 1000, cache: VerdictCache | None = None,
                on_progress: Callable[[int, int], None] | None = None) -> tuple[JudgeCheck, dict]:
    """The judge's pairwise accuracy on ``benchmark`` (first ``limit`` labelled pairs) beside the length baseline.

    Every pair is judged in both orders (``preference`` combines them, as for the win rate); accuracy and
    its bootstrap 95% interval come from ``rm_eval.compute_metrics`` (soft labels by majority side; ties
    1/2). Returns the check and the per-subset metrics. Raises ``FinealignError`` for a benchmark
    without labelled pairs.
    """
    from .benchmarks import load_benchmark
    from .rm_eval import compute_metrics

    bench = load_benchmark(benchmark, limit=limit, data_dir=data_dir)
    if bench.kind != "pairs" or not bench.items:
        raise FinealignError(f"--judge-check {benchmark}: needs labelled pairs (prompt/chosen/rejected), "
                             f"got {bench.kind}")
    items = bench.items
    ov = judge_orders(judge, [r.prompt for r in items], [_cut(r.chosen, max_chars) for r in items],
                      [_cut(r.rejected, max_chars) for r in items], cache=cache, judge_id=judge_id,
                      on_progress=on_progress)
    pref, disagree = wr.combine_orders(ov.first, ov.second, preference)
    m = compute_metrics(bench, lambda i, j: float(pref[i] if j == 0 else 1.0 - pref[i]), seed=seed, n_boot=n_boot)
    ln = compute_metrics(bench, lambda i, j: float(len(items[i].chosen if j == 0 else items[i].rejected)),
                         seed=seed, n_boot=n_boot)
    o, lo = m["overall"], ln["overall"]
    chk = JudgeCheck(bench.name, o["n"], o["accuracy"], o["ci_low"], o["ci_high"], lo["accuracy"], lo["ci_low"],
                     lo["ci_high"], None if judge.symmetric else float(np.mean(disagree)),
                     ov.path_counts(judge.symmetric))
    by_subset = {k: {"judge": v, "length": ln["by_subset"][k]} for k, v in m["by_subset"].items()}
    return chk, by_subset


def judge_check(judge: Judge, cfg: WinrateConfig, cache: VerdictCache, report) -> tuple[JudgeCheck | None, dict]:
    """``check_judge`` with ``cfg``'s settings (None when ``--judge-check none``)."""
    if cfg.judge_check.strip().lower() == "none":
        return None, {}
    return check_judge(judge, cfg.judge_check, judge_id=judge_key(cfg.judge), limit=cfg.judge_check_limit,
                       data_dir=cfg.data_dir, max_chars=cfg.max_chars, preference=cfg.preference, seed=cfg.seed,
                       n_boot=cfg.n_boot, cache=cache, on_progress=lambda d, t: report("judge-check", d, t))


def _warning(cfg: WinrateConfig, chk: JudgeCheck | None) -> str | None:
    if chk is None:
        return (f"judge {cfg.judge} was not validated (--judge-check none): its win rates are not evidence "
                "until its own accuracy is measured")
    if not chk.evidence:
        where = ("has no interval (too few pairs)" if not math.isfinite(chk.ci_high) else "includes 0.5 (chance)"
                 if chk.ci_high >= 0.5 else "lies below 0.5 (it prefers the worse answer)")
        return (f"judge {cfg.judge} does not beat chance on {chk.benchmark}: its accuracy {chk.accuracy:.3f} "
                f"[{chk.ci_low:.3f}, {chk.ci_high:.3f}] {where}, so its win rates are not evidence")
    return None


def run(cfg: WinrateConfig, on_progress: Callable[[str, int, int], None] | None = None, *,
        judge: Judge | None = None, check_cache: str | Path | None = None) -> WinrateResult:
    report = on_progress or (lambda *_: None)
    settings = _settings(cfg, judge_given=judge is not None)  # computed once: models and files are digested
    out = prepare_out(cfg, settings)
    ours = _side(cfg, out, "model", report, settings)
    theirs = _side(cfg, out, "reference", report, settings)
    if cfg.prompts is not None and (cfg.outputs is not None or cfg.reference_outputs is not None):
        from ..data.prompts import read_prompts

        listed = [Output(p.prompt, "", f"{cfg.prompts}:{p.id}") for p in read_prompts(cfg.prompts)]
        match_sides(listed, ours, (str(cfg.prompts), str(cfg.outputs or cfg.model)))
        match_sides(listed, theirs, (str(cfg.prompts), str(cfg.reference_outputs or cfg.reference)))
    pairs = match_sides(ours, theirs, (str(cfg.outputs or cfg.model), str(cfg.reference_outputs or cfg.reference)))
    claim_out(cfg, settings)
    own_judge = judge is None
    if own_judge:
        judge = load_judge(cfg.judge, dtype=cfg.dtype, device=cfg.device, batch_size=cfg.batch_size)
    cache = VerdictCache(out / "judgments.jsonl")
    if check_cache is not None:
        Path(check_cache).parent.mkdir(parents=True, exist_ok=True)
    chk_cache = cache if check_cache is None else VerdictCache(check_cache)
    try:
        chk, by_subset = judge_check(judge, cfg, chk_cache, report)
        ov = judge_orders(judge, [o.prompt for o, _ in pairs], [_cut(o.text, cfg.max_chars) for o, _ in pairs],
                          [_cut(r.text, cfg.max_chars) for _, r in pairs], cache=cache, judge_id=judge_key(cfg.judge),
                          on_progress=lambda d, t: report("judge", d, t))
    finally:
        cache.close()
        if chk_cache is not cache:
            chk_cache.close()
        if own_judge:
            judge.close()
    p1, p2 = ov.first, ov.second
    pref, disagree = wr.combine_orders(p1, p2, cfg.preference)
    len_out = np.array([len(o.text) for o, _ in pairs], dtype=float)
    len_ref = np.array([len(r.text) for _, r in pairs], dtype=float)
    stats = wr.win_rate_stats(pref, n_boot=cfg.n_boot, seed=cfg.seed)
    lc = wr.lc_win_rate(pref, len_out, len_ref)
    warning = _warning(cfg, chk)
    paths = {"json": str(out / "results.json"), "markdown": str(out / "results.md"), "pairs": str(out / "pairs.jsonl"),
             "judgments": str(out / "judgments.jsonl")}
    lc_warning = None if lc.status == wr.LC_OK else f"length-controlled win rate {lc.status}: {lc.reason}"
    res = WinrateResult(stats.win_rate, stats.se, (stats.ci_low, stats.ci_high), lc.lc_win_rate, lc.se, stats.n,
                        stats.wins, stats.losses, stats.ties,
                        None if judge.symmetric else float(np.mean(disagree)), cfg.judge, chk, warning, paths,
                        ov.path_counts(judge.symmetric), lc.status, lc_warning)
    write_jsonl(out / "pairs.jsonl", [
        {"prompt_id": i, "prompt": o.prompt, "output": o.text, "reference": r.text, "preference": float(pref[i]),
         "p_output_first": float(p1[i]), "p_reference_first": float(p2[i]), "disagree": bool(disagree[i]),
         "path_output_first": ov.first_paths[i], "path_reference_first": ov.second_paths[i],
         "len_output": len(o.text), "len_reference": len(r.text)} for i, (o, r) in enumerate(pairs)])
    doc = to_json(res, cfg, lc, len_out, len_ref, by_subset)
    write_json(out / "results.json", doc)
    write_text_atomic(out / "results.md", markdown(doc))
    return res


# ------------------------------------------------------------------------------------------ reports


def _num(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def to_json(res: WinrateResult, cfg: WinrateConfig, lc: wr.LCWinRate, len_out, len_ref, by_subset: dict) -> dict:
    chk = res.judge_check
    check = None if chk is None else {
        "benchmark": chk.benchmark, "n": chk.n, "accuracy": _num(chk.accuracy), "ci_low": _num(chk.ci_low),
        "ci_high": _num(chk.ci_high), "length_accuracy": _num(chk.length_accuracy),
        "length_ci_low": _num(chk.length_ci_low), "length_ci_high": _num(chk.length_ci_high),
        "position_disagreement": chk.position_disagreement, "evidence": chk.evidence, "judge_paths": chk.paths,
        "beats_length": bool(chk.accuracy > chk.length_accuracy), "limit": cfg.judge_check_limit,
        "by_subset": by_subset}
    return {
        "model": cfg.model or str(cfg.outputs), "reference": cfg.reference or str(cfg.reference_outputs),
        "judge": cfg.judge, "preference": cfg.preference, "n": res.n, "wins": res.wins, "losses": res.losses,
        "ties": res.ties, "win_rate": _num(res.win_rate), "win_rate_se": _num(res.win_rate_se),
        "win_rate_ci": [_num(res.win_rate_ci[0]), _num(res.win_rate_ci[1])], "lc_win_rate": _num(res.lc_win_rate),
        "lc_win_rate_se": _num(res.lc_win_rate_se), "lc_coefficients": lc.coef, "lc_status": res.lc_status,
        "lc_warning": res.lc_warning, "judge_paths": res.judge_paths,
        "position_disagreement": res.position_disagreement,
        "mean_length": {"output": float(np.mean(len_out)), "reference": float(np.mean(len_ref))},
        "judge_check": check, "warning": res.warning,
        "settings": {"max_chars": cfg.max_chars, "judge_check": cfg.judge_check,
                     "judge_check_limit": cfg.judge_check_limit, "max_new_tokens": cfg.max_new_tokens,
                     "temperature": cfg.temperature, "top_p": cfg.top_p, "seed": cfg.seed,
                     "bootstrap": {"n_boot": cfg.n_boot, "level": 0.95}},
    }


def _pct(x, nd: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{nd}f}"


def lc_cell(doc: dict, nd: int = 1) -> str:
    """The LC win rate as the reports show it: percent, ``n/a (not estimable)`` or ``NN.N (unstable)``."""
    status = doc.get("lc_status") or "ok"
    if status == wr.LC_NOT_ESTIMABLE or doc.get("lc_win_rate") is None:
        return "n/a (not estimable)"
    return _pct(doc["lc_win_rate"], nd) + ("" if status == wr.LC_OK else f" ({status})")


def markdown(doc: dict) -> str:
    """``results.md``: win rate and LC win rate (percent) with errors, counts, the judge's verdict paths and
    its own check."""
    from .judge_orders import paths_summary

    lo, hi = doc["win_rate_ci"]
    lines = [f"### Win rate: `{doc['model']}` vs `{doc['reference']}`", "",
             f"judge: `{doc['judge']}` ({doc['preference']} preferences, both orders averaged"
             + ("" if doc["position_disagreement"] is None else
                f"; the two orders disagree on {_pct(doc['position_disagreement'])}% of pairs") + ")", "",
             "| measure | value (%) | SE | 95% interval |", "|---|---:|---:|---|",
             f"| win rate (ties 1/2) | {_pct(doc['win_rate'])} | {_pct(doc['win_rate_se'])} | "
             f"[{_pct(lo)}, {_pct(hi)}] (bootstrap) |",
             f"| length-controlled win rate | {lc_cell(doc)} | {_pct(doc['lc_win_rate_se'])} | "
             f"(AlpacaEval 2 GLM, delta-method SE; status: {doc.get('lc_status') or 'ok'}) |", "",
             f"{doc['n']} prompts: {doc['wins']} wins, {doc['losses']} losses, {doc['ties']} ties; mean length "
             f"{doc['mean_length']['output']:.0f} vs {doc['mean_length']['reference']:.0f} characters.",
             f"Judge verdict paths: {paths_summary(doc.get('judge_paths'))}.", ""]
    if doc.get("lc_warning"):
        lines += [f"> **Warning:** {doc['lc_warning']}.", ""]
    chk = doc["judge_check"]
    if chk is not None:
        lines += ["#### The judge's own accuracy", "",
                  "| benchmark | pairs | judge accuracy [95% CI] | length baseline (longer wins) [95% CI] | "
                  "order disagreement |", "|---|---:|---|---|---:|",
                  f"| {chk['benchmark']} | {chk['n']} | {chk['accuracy']:.3f} "
                  f"[{chk['ci_low']:.3f}, {chk['ci_high']:.3f}] "
                  f"| {chk['length_accuracy']:.3f} [{chk['length_ci_low']:.3f}, {chk['length_ci_high']:.3f}] | "
                  + ("n/a" if chk["position_disagreement"] is None else f"{_pct(chk['position_disagreement'])}%")
                  + " |", "", f"Judge-check verdict paths: {paths_summary(chk.get('judge_paths'))}.", ""]
    if doc["warning"]:
        lines += [f"> **Warning:** {doc['warning']}.", ""]
    if chk is not None and chk["evidence"] and not chk["beats_length"]:
        lines += [f"> Note: on these pairs the judge does not beat \"the longer response wins\" "
                  f"({chk['length_accuracy']:.3f}); its verdicts may follow length, so read the length-controlled "
                  "win rate.", ""]
    return "\n".join(lines)


def joint_lc_win_rates(out_dirs: list[str | Path]) -> list[wr.LCWinRate]:
    """Length-controlled win rates of several ``eval winrate`` runs with the difficulty term (AlpacaEval 2's way).

    The runs (their ``pairs.jsonl``) must share the prompts and the reference outputs, e.g. several
    policies judged against one initial policy; the per-prompt difficulty is estimated from all of them
    (``core.winrate.lc_win_rates``). Raises ``FinealignError`` when they do not share them.
    """
    runs = []
    for d in out_dirs:
        rows = [o for _, o in iter_objects(Path(d) / "pairs.jsonl")]
        runs.append({prompt_key(o["prompt"]): o for o in rows})
    keys = sorted(runs[0])
    for d, r in zip(out_dirs, runs):
        if sorted(r) != keys or any(r[k]["reference"] != runs[0][k]["reference"] for k in keys):
            raise FinealignError(f"{d}: other prompts or reference outputs than {out_dirs[0]}; a joint "
                                 "length-controlled win rate needs runs against the same reference outputs")
    P = np.array([[r[k]["preference"] for k in keys] for r in runs])
    L = np.array([[r[k]["len_output"] for k in keys] for r in runs], dtype=float)
    ref = np.array([runs[0][k]["len_reference"] for k in keys], dtype=float)
    return wr.lc_win_rates(P, L, ref)
