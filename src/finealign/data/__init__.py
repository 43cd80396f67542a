"""Record types, readers and writers, adapters for public data sets."""

from .io import JsonlAppender, iter_objects, read_records, write_json, write_jsonl, write_text_atomic
from .records import (EditRecord, KTORecord, PairRecord, PromptRecord, RatingRecord, Record, ResponseRecord,
                      as_messages, prompt_text)

__all__ = ["EditRecord", "JsonlAppender", "KTORecord", "PairRecord", "PromptRecord", "RatingRecord", "Record",
           "ResponseRecord", "as_messages", "iter_objects", "prompt_text", "read_records", "write_json",
           "write_jsonl", "write_text_atomic"]
