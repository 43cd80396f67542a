"""Errors that finealign reports to users.

Every error a user can cause (bad data, a missing model, a malformed config) is a
``FinealignError``; the CLI prints its message on one line and exits non-zero, never a
traceback. Data errors name the place: ``path:line: field: problem``.
"""

from __future__ import annotations


class FinealignError(Exception):
    """An error caused by input or environment, with a message meant for the user."""


class DataError(FinealignError):
    """A bad record: ``path:line: field: problem``."""

    def __init__(self, path: object, line: int | None, field: str | None, problem: str):
        self.path = str(path)
        self.line = line
        self.field = field
        self.problem = problem
        where = self.path if line is None else f"{self.path}:{line}"
        msg = f"{where}: {field}: {problem}" if field else f"{where}: {problem}"
        super().__init__(msg)


class ModelError(FinealignError):
    """A model spec that cannot be resolved or loaded."""


class ConfigError(FinealignError):
    """A bad setting: ``where: field: problem`` (``where`` is a YAML file and line, or the flag)."""

    def __init__(self, field: str, problem: str, where: str | None = None):
        self.field = field
        self.problem = problem
        self.where = where
        super().__init__(f"{where}: {field}: {problem}" if where else f"{field}: {problem}")
