"""``finealign annotate serve|add-annotator|export|stats``: the human minimal-edit annotation app.

Flags are generated from the dataclasses of :mod:`finealign.serve.annotate.config`.
"""

from __future__ import annotations

import json
from pathlib import Path

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _existing_store(db: str):
    from ..errors import FinealignError
    from ..serve.annotate.store import AnnotationStore

    if not Path(db).is_file():
        raise FinealignError(f"{db}: no such annotation database")
    return AnnotationStore(db)


def run_serve(cfg, quiet: bool = False) -> None:
    """Load items (if ``--data``), then serve the page until Ctrl-C."""
    import uvicorn

    from ..errors import FinealignError
    from ..serve.annotate.app import create_app
    from ..serve.annotate.store import AnnotationStore
    from .common import console
    from .serve import _check_free

    store = AnnotationStore(cfg.db, lease_s=cfg.lease, max_ratio=cfg.max_ratio)
    if cfg.data:
        added, existing = store.import_file(cfg.data)
        console.print(f"{cfg.data}: {added} items added, {existing} already in {cfg.db}", highlight=False)
    if store.count_items() == 0:
        raise FinealignError(f"{cfg.db}: no items yet; give --data FILE (pairs or `finealign edit` output)")
    if cfg.overlap is not None:
        n = store.set_overlap(cfg.overlap, cfg.overlap_k)
        console.print(f"{n} items will be annotated by {cfg.overlap_k} annotators each", highlight=False)
    _check_free(cfg.host, cfg.port)
    if cfg.host not in LOOPBACK:
        console.print(f"[yellow]warning:[/] serving on {cfg.host} over plain HTTP: tokens and texts cross the network "
                      "unencrypted; put a TLS proxy in front, or keep the default 127.0.0.1", highlight=False)
    tokenizer = None
    if cfg.tokenizer:
        from ..models import load_tokenizer

        tokenizer = load_tokenizer(cfg.tokenizer)
    app = create_app(store, max_ratio=cfg.max_ratio, tokenizer=tokenizer, max_chars=cfg.max_chars,
                     max_body=cfg.max_body)
    names = [a.name for a in store.annotators()]
    if not names:
        console.print(f"no annotators yet: finealign annotate add-annotator NAME --db {cfg.db}", highlight=False)
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    console.print(f"annotation page at http://{host}:{cfg.port}/ ({store.count_items()} items, "
                  f"{len(names)} annotators; Ctrl-C to stop)", highlight=False)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning" if quiet else "info")


def run_add_annotator(cfg, quiet: bool = False) -> None:
    """Print the new token on stdout and the page's link on stderr."""
    from ..serve.annotate.store import AnnotationStore
    from .common import console, out

    token = AnnotationStore(cfg.db).add_annotator(cfg.name, rotate=cfg.rotate)
    out.print(token, highlight=False, soft_wrap=True)
    if not quiet:
        console.print(f"{cfg.name}: open {cfg.url.rstrip('/')}/#token={token}", highlight=False, soft_wrap=True)


def run_export(cfg, quiet: bool = False) -> None:
    """Write the minimal-edit records; a JSON summary on stdout."""
    from ..data.io import write_jsonl
    from ..serve.annotate.results import export_records
    from .common import out

    records, counts = export_records(_existing_store(cfg.db), skip_flagged=cfg.skip_flagged,
                                     minimal_only=cfg.minimal_only)
    write_jsonl(cfg.out, records)
    out.print(json.dumps({"out": str(cfg.out), **counts}), highlight=False, soft_wrap=True)


def run_stats(cfg, quiet: bool = False) -> None:
    """Print the statistics as JSON on stdout."""
    from ..serve.annotate.results import compute_stats
    from .common import out

    out.print(json.dumps(compute_stats(_existing_store(cfg.db)), indent=2), highlight=False, soft_wrap=True)


def register(app, annotate_app=None, **_):
    import typer

    from ..serve.annotate.config import AddAnnotatorConfig, AnnotateExportConfig, AnnotateServeConfig, \
        AnnotateStatsConfig
    from .options import command_from_config

    if annotate_app is None:
        annotate_app = typer.Typer(no_args_is_help=True, help="Human minimal-edit annotation app.")
        app.add_typer(annotate_app, name="annotate")
    command_from_config(annotate_app, "serve", AnnotateServeConfig, run_serve,
                        help="Serve the annotation page: people make (pairs) or review (`finealign edit` output) "
                             "minimal edits; SQLite storage, one token per annotator.")
    command_from_config(annotate_app, "add-annotator", AddAnnotatorConfig, run_add_annotator,
                        help="Create an annotator; prints their token (stdout) and the page link (stderr).")
    command_from_config(annotate_app, "export", AnnotateExportConfig, run_export,
                        help="Write minimal-edit records (prompt/original/edited/meta) that `train token-rm` reads.")
    command_from_config(annotate_app, "stats", AnnotateStatsConfig, run_stats,
                        help="Counts, per-annotator throughput and agreement on overlapping items, as JSON.")
