"""finealign: align language models with fine-grained reward signals."""

__version__ = "0.1.0"
