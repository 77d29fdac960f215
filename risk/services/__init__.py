"""Writes of the risk checkpoint: evaluations, rule sets, outcomes and lists."""

from .checkpoint import STRONG_CHANNELS, Assessment, evaluate, trust_device

__all__ = ["STRONG_CHANNELS", "Assessment", "evaluate", "trust_device"]
