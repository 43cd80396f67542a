"""``finealign data convert|list|stats|export-trl``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import FinealignError


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


def register(data_app, **_):
    @data_app.command("convert")
    def convert_cmd(
        paths: list[Path] = typer.Argument(..., metavar="[SRC] OUT.jsonl",
                                           help="Optional source file or folder (default: the shared data folder), "
                                                "then the output .jsonl file."),
        name: str = typer.Option(..., "--from", help="Data set name (see `finealign data list`)."),
    ):
        """Convert a public data set to finealign JSONL records (atomic write); prints the count."""
        from ..data.adapters import convert_dataset
        from ..data.io import write_jsonl
        from .common import console, out

        if len(paths) not in (1, 2):
            raise FinealignError("give [SRC] OUT.jsonl: an optional source and one output file")
        src, dst = (None, paths[0]) if len(paths) == 1 else (paths[0], paths[1])
        dst = _jsonl_out(dst)
        loaded = convert_dataset(name, src)
        if not loaded.records:
            raise FinealignError(f"{name}: no records found in {src or 'the shared data folder'}")
        write_jsonl(dst, loaded.records)
        _report_skipped(loaded.skipped)
        console.print(f"wrote {len(loaded.records)} {loaded.records[0].kind} records to {dst}")
        out.print(len(loaded.records))

    @data_app.command("list")
    def list_cmd(
        counts: bool = typer.Option(True, "--counts/--no-counts", help="Convert each set to count its records."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ):
        """List the public data sets: name, record kind, count (when the shared folder is present), license."""
        from ..data.adapters import DATASETS, convert_dataset, dataset_path
        from ..data.shared import data_root
        from .common import out

        root = data_root(required=False)
        rows = []
        for n, info in DATASETS.items():
            count = None
            if counts and root is not None:
                try:
                    count = len(convert_dataset(n).records)
                except FinealignError:
                    count = None
            path = str(dataset_path(n)) if root is not None else info.default_path
            rows.append({"name": n, "kind": info.kind, "count": count, "license": info.license, "path": path,
                         "description": info.description})
        if as_json:
            print(json.dumps(rows, indent=2))
            return
        from rich.table import Table

        t = Table("name", "kind", "records", "license")
        t.columns[0].no_wrap = True
        for r in rows:
            t.add_row(r["name"], r["kind"], "-" if r["count"] is None else str(r["count"]), r["license"])
        out.print(t)
        if root is None:
            out.print("shared data folder not found: set FINEALIGN_DATA_DIR to count records")

    @data_app.command("stats")
    def stats_cmd(
        file: Path = typer.Argument(..., metavar="FILE", help="A .jsonl/.json/.csv/.parquet file of finealign records."),
        tokenizer: str = typer.Option("smollm2-135m-instruct", "--tokenizer", "-t",
                                      help="Tokenizer spec (model spec) used to count tokens."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ):
        """Record kind, counts, and token-length percentiles (p50/p90/p99/max) of every text field."""
        from ..data.io import read_records
        from ..data.stats import TEXT_FIELDS, compute_stats
        from ..models import load_tokenizer
        from .common import out, progress

        records = read_records(file)
        tok = load_tokenizer(tokenizer)
        total = len(records) * len(TEXT_FIELDS.get(records[0].kind, ())) if records else 0
        with progress(disable=total < 5000) as bar:
            task = bar.add_task("tokenizing", total=total, info="")
            st = compute_stats(records, tok, path=file, tokenizer_name=tokenizer,
                               on_batch=lambda n: bar.advance(task, n))
        if as_json:
            print(json.dumps(st.to_obj(), indent=2, ensure_ascii=False))
            return
        from rich.table import Table

        out.print(f"{st.path}: {st.counts.get('records', 0)} {st.kind} records", soft_wrap=True)
        c = Table("count", "value")
        for k, v in st.counts.items():
            c.add_row(k, str(v))
        out.print(c)
        t = Table(f"field (tokens, {tokenizer})", "mean", "p50", "p90", "p99", "max")
        for k, s in st.lengths.items():
            t.add_row(k, f"{s.mean:.1f}", f"{s.p50:g}", f"{s.p90:g}", f"{s.p99:g}", f"{s.max:g}")
        for k, s in st.values.items():
            t.add_row(f"{k} (value)", f"{s.mean:.3f}", f"{s.p50:.3g}", f"{s.p90:.3g}", f"{s.p99:.3g}", f"{s.max:.3g}")
        out.print(t)

    @data_app.command("export-trl")
    def export_cmd(
        src: Path = typer.Argument(..., metavar="IN", help="finealign records (.jsonl/.json/.csv/.parquet)."),
        dst: Path = typer.Argument(..., metavar="OUT.jsonl", help="Output .jsonl in TRL's format."),
        to: Optional[str] = typer.Option(None, "--to", help="dpo | kto | sft | prompt (default by record kind: "
                                                             "pair/edit -> dpo, kto -> kto, response -> sft)."),
        fmt: str = typer.Option("auto", "--format", help="auto | standard | conversational"),
        tokenizer: Optional[str] = typer.Option(None, "--tokenizer", "-t",
                                                help="Render multi-turn prompts with this chat template "
                                                     "(standard format only)."),
        threshold: Optional[float] = typer.Option(None, "--threshold",
                                                  help="Ratings: label = score >= threshold (kto), keep those (sft)."),
    ):
        """Export records to TRL's dataset formats for DPO / KTO / SFT (or prompt-only)."""
        from ..data.io import read_records, write_jsonl
        from ..data.trl_export import to_trl
        from .common import console, out

        dst = _jsonl_out(dst)
        records = read_records(src)
        tok = None
        if tokenizer:
            from ..models import load_tokenizer

            tok = load_tokenizer(tokenizer)
        ex = to_trl(records, to, fmt, tokenizer=tok, threshold=threshold, source=str(src))
        if not ex.rows:
            raise FinealignError(f"{src}: nothing to export as {ex.target}")
        write_jsonl(dst, ex.rows)
        _report_skipped(ex.skipped)
        console.print(f"wrote {len(ex.rows)} {ex.target} rows ({ex.format} format) to {dst}")
        out.print(len(ex.rows))
