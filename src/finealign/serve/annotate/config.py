"""Settings of ``finealign annotate`` verbs: one documented dataclass each (see ``finealign.config``)."""

from __future__ import annotations

from dataclasses import dataclass

from ...config import Settings, positive, setting, unit_interval

__all__ = ["AddAnnotatorConfig", "AnnotateExportConfig", "AnnotateServeConfig", "AnnotateStatsConfig"]


def _port(v) -> str | None:
    return None if 0 < v < 65536 else f"expected 1-65535, got {v}"


def _at_least_2(v) -> str | None:
    return None if v >= 2 else f"must be >= 2, got {v}"


@dataclass(kw_only=True)
class AnnotateServeConfig(Settings):
    """Serve the annotation page and its JSON API over an annotation database."""

    db: str = setting(None, required=True, help="Annotation database (SQLite file; created when absent).")
    data: str | None = setting(None, help="Items to load: pairs prompt/chosen/rejected (edit mode) or edit records "
                                          "prompt/original/edited from `finealign edit` (review mode). Loading "
                                          "the same file again adds nothing; optional once the database has items.")
    host: str = setting("127.0.0.1", help="Address to bind: loopback unless you mean to expose it (plain HTTP).")
    port: int = setting(8765, help="Port.", check=_port)
    overlap: float | None = setting(None, check=unit_interval,
                                    help="Share of items (0-1) given to --overlap-k annotators each, for agreement; "
                                         "unset: keep the database's (0 at first).")
    overlap_k: int = setting(2, check=_at_least_2, help="Annotators per overlap item.")
    max_ratio: float = setting(0.5, check=positive,
                               help="Minimality threshold of the edit-ratio meter (as `finealign edit --max-ratio`).")
    tokenizer: str | None = setting(None, help="Model spec whose tokenizer shows, in the live diff, the tokens that get "
                                               "a label (e.g. smollm2-135m-instruct); unset: the changed words.")
    lease: float = setting(1800.0, check=positive,
                           help="Seconds an unfinished item stays reserved for its annotator before others may get it.")
    max_chars: int = setting(50_000, check=positive, help="Longest edited text accepted, in characters.")
    max_body: int = setting(1 << 20, check=positive, help="Largest request body accepted, in bytes.")


@dataclass(kw_only=True)
class AddAnnotatorConfig(Settings):
    """Create an annotator and print their token (the database keeps only its hash)."""

    name: str = setting(None, positional=True, required=True, help="Annotator name (1-64 printable characters).")
    db: str = setting(None, required=True, help="Annotation database (SQLite file; created when absent).")
    rotate: bool = setting(False, help="Give an existing annotator a new token; the old one stops working.")
    url: str = setting("http://127.0.0.1:8765", help="Address of the served page, for the printed link.")


@dataclass(kw_only=True)
class AnnotateExportConfig(Settings):
    """Write the annotations as minimal-edit records (prompt/original/edited/meta) for `train token-rm`."""

    out: str = setting(None, positional=True, required=True, help="Output JSONL (written atomically).")
    db: str = setting(None, required=True, help="Annotation database.")
    skip_flagged: bool = setting(False, help="Leave out edits their annotator flagged.")
    minimal_only: bool = setting(False, help="Leave out edits over the minimality threshold.")


@dataclass(kw_only=True)
class AnnotateStatsConfig(Settings):
    """Counts, per-annotator throughput and agreement on overlapping items (JSON on stdout)."""

    db: str = setting(None, required=True, help="Annotation database.")
