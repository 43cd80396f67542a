"""The human minimal-edit annotation app: ``finealign annotate serve|add-annotator|export|stats``.

``store`` (SQLite in WAL mode), ``app`` (FastAPI: a static page and a JSON API), ``results``
(export to minimal-edit records; counts, throughput, agreement), ``config`` (the verbs' settings).
"""

from .app import TokenView, create_app, diff_payload
from .results import compute_stats, export_records
from .store import AnnotationStore, Annotator, Item, Submission

__all__ = ["AnnotationStore", "Annotator", "Item", "Submission", "TokenView", "compute_stats", "create_app",
           "diff_payload", "export_records"]
