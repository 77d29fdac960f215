"""Writes of the risk checkpoint: evaluations, rule sets, outcomes and lists."""

from .checkpoint import STRONG_CHANNELS, Assessment, evaluate, trust_device
from .lists import (
    add_network_range,
    approve_entry,
    approve_removal,
    propose_block,
    propose_removal,
    reject_entry,
    reject_removal,
    remove_entry,
)
from .outcomes import record_outcome

__all__ = [
    "STRONG_CHANNELS",
    "Assessment",
    "add_network_range",
    "approve_entry",
    "approve_removal",
    "evaluate",
    "propose_block",
    "propose_removal",
    "record_outcome",
    "reject_entry",
    "reject_removal",
    "remove_entry",
    "trust_device",
]
