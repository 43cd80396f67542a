"""Placeholder: filled in by its owner."""


def register(**_):
    pass
