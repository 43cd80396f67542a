"""The one generate job (``finealign.generate_job``) behind generate's transformers, vLLM and engine
paths and behind ``eval winrate``'s answers."""

from __future__ import annotations

import json
import shutil

import pytest

from finealign.errors import ConfigError, FinealignError

PROMPTS = [{"id": f"p{i}", "prompt": f"Tell me about {w}."} for i, w in enumerate(["the sea", "France", "a fox",
                                                                                  "poems", "rain"])]
KW = dict(k=2, max_new_tokens=4, batch_size=4, temperature=0.7, seed=3, device="cpu")


def _prompts(path, rows=PROMPTS):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _run(path: str, prompts, out):
    if path == "hf":
        from finealign.generation import generate_file

        return generate_file("tiny-random", prompts, out, **KW)
    from finealign.engine.shards import EngineArgs
    from finealign.engine.sharded import generate_file_sharded

    return generate_file_sharded("tiny-random", prompts, out, engine=EngineArgs(shard_size=2), **KW)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    d = tmp_path_factory.mktemp("full")
    prompts = _prompts(d / "prompts.jsonl")
    _run("hf", prompts, d / "full.jsonl")
    return prompts, d / "full.jsonl"


@pytest.mark.parametrize("path", ["hf", "sharded-local"])
def test_a_resumed_run_of_every_engine_ends_byte_identical(path, uninterrupted, tmp_path):
    """A run cut after 3 lines (mid-chunk: 2 prompts x 2 samples per chunk) and resumed by the engine
    writes what the uninterrupted transformers run wrote, byte for byte, and says what it skipped."""
    prompts, full = uninterrupted
    lines = full.read_bytes().splitlines(keepends=True)
    part = tmp_path / "part.jsonl"
    part.write_bytes(b"".join(lines[:3]) + lines[3][:10])  # a torn fourth line, as a killed run leaves it
    shutil.copy(full.with_name(full.name + ".manifest.json"), part.with_name(part.name + ".manifest.json"))
    st = _run(path, prompts, part)
    assert part.read_bytes() == full.read_bytes()
    assert st.skipped == 3 and st.responses_written == len(lines) - 3 and st.prompts == len(PROMPTS)
    again = _run(path, prompts, part)  # done: nothing more to write
    assert again.responses_written == 0 and again.skipped == len(lines)
    assert not part.with_name(part.name + ".shards").exists()


def test_every_generate_path_runs_the_shared_job(tmp_path, monkeypatch):
    """generate (transformers, vLLM, the engines) and eval winrate's answers all go through
    ``generate_job.run_generate_job``, each with its own backend."""
    import finealign.generate_job as gj

    real, seen = gj.run_generate_job, []

    def spy(backend, prompts_path, out_path, **kw):
        seen.append((type(backend).__name__, kw.get("layout", gj.GENERATE).verb))
        if type(backend).__name__ == "VllmBackend":  # vLLM is not installed here: the route is what is checked
            return None
        return real(backend, prompts_path, out_path, **kw)

    monkeypatch.setattr(gj, "run_generate_job", spy)
    prompts = _prompts(tmp_path / "prompts.jsonl", PROMPTS[:2])
    _run("hf", prompts, tmp_path / "a.jsonl")
    _run("sharded-local", prompts, tmp_path / "b.jsonl")
    from finealign.generation_vllm import vllm_generate_file

    vllm_generate_file("tiny-random", prompts, tmp_path / "c.jsonl", k=1, llm=object(), tokenizer=object())
    from finealign.eval.winrate import WinrateConfig, run_winrate

    run_winrate(WinrateConfig(out=tmp_path / "wr", model="tiny-random", reference="tiny-random", prompts=prompts,
                              judge="length", judge_check="none", max_new_tokens=3, n_boot=20, device="cpu"))
    assert seen == [("TransformersBackend", "generate"), ("ShardedBackend", "generate"), ("VllmBackend", "generate"),
                    ("TransformersBackend", "eval winrate"), ("TransformersBackend", "eval winrate")]


def test_winrate_answers_have_a_manifest_and_other_sampling_settings_are_refused(tmp_path):
    """The answers eval winrate generates carry generate's manifest; a rerun with another temperature is
    refused (as generate refuses it), by settings.json and, were that gone, by the answers' own manifest;
    --overwrite starts afresh; answers from before the manifest are adopted, not regenerated."""
    from finealign.eval.winrate import WinrateConfig, run_winrate

    prompts = _prompts(tmp_path / "prompts.jsonl", PROMPTS[:2])
    out = tmp_path / "wr"
    cfg = dict(out=out, model="tiny-random", reference="tiny-random", prompts=prompts, judge="length",
               judge_check="none", max_new_tokens=3, n_boot=20, device="cpu")
    run_winrate(WinrateConfig(**cfg))
    answers = out / "outputs.jsonl"
    manifest = json.loads((out / "outputs.jsonl.manifest.json").read_text())
    assert manifest["verb"] == "eval winrate" and manifest["settings"]["temperature"] == 0.0
    assert manifest["settings"]["max_new_tokens"] == 3 and manifest["settings"]["model"]["spec"] == "tiny-random"
    assert (out / "reference_outputs.jsonl.manifest.json").is_file()
    before = answers.read_bytes()
    with pytest.raises(ConfigError, match="temperature: was 0.0, now 0.7"):
        run_winrate(WinrateConfig(**cfg, temperature=0.7))
    (out / "settings.json").unlink()
    with pytest.raises(FinealignError, match="temperature: made with 0.0, this run has 0.7"):
        run_winrate(WinrateConfig(**cfg, temperature=0.7))
    assert answers.read_bytes() == before  # nothing appended under the other settings
    run_winrate(WinrateConfig(**cfg, temperature=0.7, overwrite=True))
    assert json.loads((out / "outputs.jsonl.manifest.json").read_text())["settings"]["temperature"] == 0.7
    # answers written before they had a manifest: adopted (settings.json vouches for them), not regenerated
    (out / "outputs.jsonl.manifest.json").unlink()
    answers.write_bytes(answers.read_bytes().replace(b'"completion": "', b'"completion": "kept ', 1))
    kept = answers.read_bytes()
    run_winrate(WinrateConfig(**cfg, temperature=0.7))
    assert answers.read_bytes() == kept and (out / "outputs.jsonl.manifest.json").is_file()
