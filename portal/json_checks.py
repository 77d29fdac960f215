"""Why a JSON value could not be stored or echoed back: shared by every JSON endpoint."""

import math
import re
from typing import Any

from django.utils.translation import gettext as _

# The contract's events nest three deep; the margin is generous, and far below what would
# exhaust the stack when the event is stored, hashed into the timeline or rendered.
MAX_JSON_NESTING = 32
# A UTF-16 surrogate on its own: JSON's "\ud800" escape makes one, and UTF-8 (so PostgreSQL)
# cannot encode it.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def unstorable_json(value: Any) -> str | None:
    """Say why the portal could not store ``value`` as JSON (a NUL, a lone surrogate, a NaN,
    nesting too deep), or return None."""
    pending = [(value, 0)]
    while pending:  # a loop, not recursion: a deeply nested body must not exhaust the stack
        item, depth = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return _("A string holds a NUL character.")
            if LONE_SURROGATE.search(item):
                return _("A string holds a lone UTF-16 surrogate, which UTF-8 cannot encode.")
        if isinstance(item, float) and not math.isfinite(item):
            return _("A number is NaN or infinite.")
        if isinstance(item, dict | list) and depth >= MAX_JSON_NESTING:
            return _("Objects and arrays nest deeper than %(levels)d levels.") % {
                "levels": MAX_JSON_NESTING
            }
        if isinstance(item, dict):
            pending.extend((key, depth + 1) for key in item)
            pending.extend((member, depth + 1) for member in item.values())
        elif isinstance(item, list):
            pending.extend((member, depth + 1) for member in item)
    return None
