"""The human minimal-edit annotation app: ``finealign annotate serve|add-annotator|export|stats``.

``store`` (SQLite in WAL mode), ``app`` (FastAPI: a static page and a JSON API), ``results``
(export to minimal-edit records; counts, throughput, agreement), ``config`` (the verbs' settings).
"""

import importlib

_WHERE = {"TokenView": "app", "create_app": "app", "diff_payload": "app", "compute_stats": "results",
          "export_records": "results", "AnnotationStore": "store", "Annotator": "store", "Item": "store",
          "Submission": "store"}


def __getattr__(name: str):
    """The public names load on first use (PEP 562): the CLI starts without importing FastAPI."""
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AnnotationStore", "Annotator", "Item", "Submission", "TokenView", "compute_stats", "create_app",
           "diff_payload", "export_records"]
