"""Pure tensor and sequence math: no model calls, no I/O, no config objects.

Shape notation used in docstrings: B batch, T tokens, V vocabulary, F follow-ups.
"""
