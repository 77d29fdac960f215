"""Writes of the risk checkpoint: evaluations, rule sets, outcomes and lists."""

from .checkpoint import STRONG_CHANNELS, Assessment, evaluate, trust_device
from .lists import (
    add_network_range,
    approve_entry,
    propose_block,
    reject_entry,
    remove_entry,
)
from .outcomes import record_outcome

__all__ = [
    "STRONG_CHANNELS",
    "Assessment",
    "add_network_range",
    "approve_entry",
    "evaluate",
    "propose_block",
    "record_outcome",
    "reject_entry",
    "remove_entry",
    "trust_device",
]
