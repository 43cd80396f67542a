"""``finealign data convert|list|stats|export-trl``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Settings, setting
from ..data.io import to_json
from ..errors import ConfigError, FinealignError


def _jsonl_out(path: Path) -> Path:
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        raise FinealignError(f"{path}: output must be a .jsonl file")
    if path.is_dir():
        raise FinealignError(f"{path}: is a folder; give a .jsonl file name")
    return path


def _report_skipped(skipped) -> None:
    from .common import console

    for reason, n in sorted(skipped.items()):
        console.print(f"left out {n}: {reason}")


@dataclass(kw_only=True)
class ConvertConfig(Settings):
    """Convert a public data set to finealign JSONL records (atomic write); prints the count."""

    paths: list[str] = setting(default_factory=list, positional=True, required=True, metavar="[SRC] OUT.jsonl",
                               help="Optional source file or folder (default: the shared data folder), then the "
                                    "output .jsonl file.")
    dataset: str = setting(None, flag="--from", required=True, help="Data set name (see `finealign data list`).")


def run_convert(cfg: ConvertConfig, quiet: bool = False) -> None:
    from ..data.adapters import convert_dataset
    from ..data.io import write_jsonl
    from .common import console, out

    if len(cfg.paths) not in (1, 2):
        raise FinealignError("give [SRC] OUT.jsonl: an optional source and one output file")
    src, dst = (None, Path(cfg.paths[0])) if len(cfg.paths) == 1 else (Path(cfg.paths[0]), Path(cfg.paths[1]))
    dst = _jsonl_out(dst)
    loaded = convert_dataset(cfg.dataset, src)
    if not loaded.records:
        raise FinealignError(f"{cfg.dataset}: no records found in {src or 'the shared data folder'}")
    write_jsonl(dst, loaded.records)
    _report_skipped(loaded.skipped)
    console.print(f"wrote {len(loaded.records)} {loaded.records[0].kind} records to {dst}")
    out.print(len(loaded.records))


@dataclass(kw_only=True)
class ListConfig(Settings):
    """List the public data sets: name, record kind, count (when the shared folder is present), license."""

    counts: bool = setting(True, help="Convert each set to count its records.")
    json: bool = setting(False, help="Print JSON instead of a table.")


def run_list(cfg: ListConfig, quiet: bool = False) -> None:
    from ..data.adapters import DATASETS, convert_dataset, dataset_path
    from ..data.shared import data_root
    from .common import out

    root = data_root(required=False)
    rows = []
    for n, info in DATASETS.items():
        count = None
        if cfg.counts and root is not None:
            try:
                count = len(convert_dataset(n).records)
            except FinealignError:
                count = None
        path = str(dataset_path(n)) if root is not None else info.default_path
        rows.append({"name": n, "kind": info.kind, "count": count, "license": info.license, "path": path,
                     "description": info.description})
    if cfg.json:
        print(to_json(rows, indent=2, ensure_ascii=True))
        return
    from rich.table import Table

    t = Table("name", "kind", "records", "license")
    t.columns[0].no_wrap = True
    for r in rows:
        t.add_row(r["name"], r["kind"], "-" if r["count"] is None else str(r["count"]), r["license"])
    out.print(t)
    if root is None:
        out.print("shared data folder not found: set FINEALIGN_DATA_DIR to count records")


@dataclass(kw_only=True)
class StatsConfig(Settings):
    """Record kind, counts, and token-length percentiles (p50/p90/p99/max) of every text field."""

    file: str = setting(None, positional=True, required=True, metavar="FILE",
                        help="A .jsonl/.json/.csv/.parquet file of finealign records.")
    tokenizer: str = setting("smollm2-135m-instruct", short="-t", help="Tokenizer spec (model spec) used to count "
                                                                       "tokens.")
    json: bool = setting(False, help="Print JSON.")


def run_stats(cfg: StatsConfig, quiet: bool = False) -> None:
    from ..data.io import read_records
    from ..data.stats import TEXT_FIELDS, compute_stats
    from ..models import load_tokenizer
    from .common import out, progress

    file = Path(cfg.file)
    records = read_records(file)
    tok = load_tokenizer(cfg.tokenizer)
    total = len(records) * len(TEXT_FIELDS.get(records[0].kind, ())) if records else 0
    with progress(disable=quiet or total < 5000) as bar:
        task = bar.add_task("tokenizing", total=total, info="")
        st = compute_stats(records, tok, path=file, tokenizer_name=cfg.tokenizer,
                           on_batch=lambda n: bar.advance(task, n))
    if cfg.json:
        print(to_json(st.to_obj(), indent=2, ensure_ascii=False))
        return
    from rich.table import Table

    out.print(f"{st.path}: {st.counts.get('records', 0)} {st.kind} records", soft_wrap=True)
    c = Table("count", "value")
    for k, v in st.counts.items():
        c.add_row(k, str(v))
    out.print(c)
    t = Table(f"field (tokens, {cfg.tokenizer})", "mean", "p50", "p90", "p99", "max")
    for k, s in st.lengths.items():
        t.add_row(k, f"{s.mean:.1f}", f"{s.p50:g}", f"{s.p90:g}", f"{s.p99:g}", f"{s.max:g}")
    for k, s in st.values.items():
        t.add_row(f"{k} (value)", f"{s.mean:.3f}", f"{s.p50:.3g}", f"{s.p90:.3g}", f"{s.p99:.3g}", f"{s.max:.3g}")
    out.print(t)


@dataclass(kw_only=True)
class ExportConfig(Settings):
    """Export records to TRL's dataset formats for DPO / KTO / SFT (or prompt-only)."""

    input: str = setting(None, positional=True, required=True, metavar="IN",
                         help="finealign records (.jsonl/.json/.csv/.parquet).")
    out: str = setting(None, positional=True, required=True, metavar="OUT.jsonl",
                       help="Output .jsonl in TRL's format.")
    to: str | None = setting(None,
                             help="dpo | kto | sft | prompt (default by record kind: pair/edit -> dpo, kto -> kto, "
                                  "response -> sft).")
    format: str = setting("auto",
                          help="auto | standard | conversational.")
    tokenizer: str | None = setting(None, short="-t", help="Standard format: render every prompt with this chat "
                                                           "template (one format per file).")
    threshold: float | None = setting(None, help="Ratings: label = score >= threshold (kto), keep those (sft).")

    def validate(self):
        from ..data.trl_export import FORMATS, TARGETS  # (imports torch: not at CLI start)

        for name, allowed in (("to", TARGETS), ("format", FORMATS)):
            if getattr(self, name) is not None and getattr(self, name) not in allowed:
                raise ConfigError(name, f"{getattr(self, name)!r} is not one of {', '.join(allowed)}")


def run_export(cfg: ExportConfig, quiet: bool = False) -> None:
    from ..data.io import read_records, write_jsonl
    from ..data.trl_export import to_trl
    from .common import console, out

    src = Path(cfg.input)
    dst = _jsonl_out(Path(cfg.out))
    records = read_records(src)
    tok = None
    if cfg.tokenizer:
        from ..models import load_tokenizer

        tok = load_tokenizer(cfg.tokenizer)
    ex = to_trl(records, cfg.to, cfg.format, tokenizer=tok, threshold=cfg.threshold, source=str(src))
    if not ex.rows:
        raise FinealignError(f"{src}: nothing to export as {ex.target}")
    write_jsonl(dst, ex.rows)
    _report_skipped(ex.skipped)
    console.print(f"wrote {len(ex.rows)} {ex.target} rows ({ex.format} format) to {dst}")
    out.print(len(ex.rows))


def register(data_app, **_):
    from .options import command_from_config

    command_from_config(data_app, "convert", ConvertConfig, run_convert)
    command_from_config(data_app, "list", ListConfig, run_list)
    command_from_config(data_app, "stats", StatsConfig, run_stats)
    command_from_config(data_app, "export-trl", ExportConfig, run_export)
