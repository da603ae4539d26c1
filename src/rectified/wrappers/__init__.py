"""Wrappers around other optimizers: Lookahead, and Ranger = Lookahead(RAdam)."""

from rectified.wrappers.lookahead import Lookahead
from rectified.wrappers.ranger import Ranger

__all__ = ["Lookahead", "Ranger"]
