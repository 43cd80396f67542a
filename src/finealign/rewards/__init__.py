"""Scorers behind one interface: FLR, direct likelihood, token-level RM, sequence classifier, length."""

from .base import LengthScorer, Scorer, TokenScorer, TokenScores, load_scorer, parse_spec, register_scorer

__all__ = ["LengthScorer", "Scorer", "TokenScorer", "TokenScores", "load_scorer", "parse_spec", "register_scorer"]
