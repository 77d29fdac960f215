"""Bar charts drawn on the server as SVG geometry: no script, no external service, no CDN.

A chart here is only numbers (positions, sizes, labels); ``templates/backoffice/charts/`` turns
them into SVG. Colours come from CSS classes named after each series, so they live in the
style sheet (and the Content Security Policy allows no inline styles anyway).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

# The drawing's own coordinate system; the SVG scales to its container (``viewBox``).
WIDTH = 480
PLOT_LEFT = 36  # room for the value axis's labels
PLOT_TOP = 8
PLOT_BOTTOM_MARGIN = 28  # room for the category labels


@dataclass(frozen=True)
class Series:
    key: str  # used in CSS class names: letters, digits, "_"
    label: str


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    series: str
    title: str  # shown on hover; the table beside the chart carries the same numbers


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    rects: list[Rect]
    value_ticks: list[Tick]  # grid lines with their values
    category_ticks: list[Tick]  # labels under (or beside) the bars
    plot_left: float
    plot_right: float
    plot_top: float
    plot_bottom: float
    # Each bar's value written at its end (horizontal bars): (x, y, text).
    end_labels: list[tuple[float, float, str]] = field(default_factory=list)


def nice_ceiling(value: float) -> int:
    """The smallest of 1, 2, 5 × 10ⁿ that is at least ``value`` (at least 1)."""
    if value <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return int(step * magnitude)
    raise AssertionError("unreachable")


def _value_ticks(top: int, count: int = 4) -> list[int]:
    step = max(top // count, 1)
    return list(range(0, top + 1, step))


def stacked_columns(
    categories: Sequence[str],
    series: Sequence[Series],
    values: Sequence[dict[str, int]],
    *,
    height: int = 240,
    label_every: int = 1,
) -> Chart:
    """One column per category, its series stacked bottom to top in ``series`` order.

    ``values[i]`` maps a series key to its count in category ``i``; only every
    ``label_every``-th category is labelled, so 24 hours fit on a phone.
    """
    top = nice_ceiling(max((sum(v.values()) for v in values), default=0))
    plot_bottom = height - PLOT_BOTTOM_MARGIN
    plot_height = plot_bottom - PLOT_TOP
    slot = (WIDTH - PLOT_LEFT) / max(len(categories), 1)
    bar_width = slot * 0.7
    rects: list[Rect] = []
    category_ticks: list[Tick] = []
    for index, (category, counts) in enumerate(zip(categories, values, strict=True)):
        x = PLOT_LEFT + index * slot + (slot - bar_width) / 2
        base = plot_bottom
        for one in series:
            count = counts.get(one.key, 0)
            if not count:
                continue
            size = count / top * plot_height
            base -= size
            rects.append(
                Rect(x, base, bar_width, size, one.key, f"{category} · {one.label}: {count}")
            )
        if index % label_every == 0:
            category_ticks.append(Tick(x + bar_width / 2, category))
    value_ticks = [
        Tick(plot_bottom - value / top * plot_height, str(value)) for value in _value_ticks(top)
    ]
    return Chart(
        width=WIDTH,
        height=height,
        rects=rects,
        value_ticks=value_ticks,
        category_ticks=category_ticks,
        plot_left=PLOT_LEFT,
        plot_right=WIDTH,
        plot_top=PLOT_TOP,
        plot_bottom=plot_bottom,
    )


ROW_HEIGHT = 44  # a label line, then the bar under it: long labels fit on a phone too
BAR_HEIGHT = 16


def horizontal_bars(rows: Sequence[tuple[str, float, str]], *, series: str) -> Chart:
    """One bar per row of ``(label, value, value as shown)``, the label above its bar and the
    value after it; the longest bar takes most of the width."""
    top = nice_ceiling(max((value for _label, value, _shown in rows), default=0))
    height = PLOT_TOP + ROW_HEIGHT * len(rows)
    plot_width = (WIDTH - 8) * 0.85  # room after the longest bar for its value
    rects: list[Rect] = []
    category_ticks: list[Tick] = []
    end_labels: list[tuple[float, float, str]] = []
    for index, (label, value, shown) in enumerate(rows):
        y = PLOT_TOP + index * ROW_HEIGHT
        bar_top = y + ROW_HEIGHT - BAR_HEIGHT - 6
        width = value / top * plot_width
        if value:
            rects.append(Rect(0, bar_top, width, BAR_HEIGHT, series, f"{label}: {shown}"))
        category_ticks.append(Tick(bar_top - 6, label))
        end_labels.append((width + 6, bar_top + BAR_HEIGHT / 2, shown))
    return Chart(
        width=WIDTH,
        height=height,
        rects=rects,
        value_ticks=[],
        category_ticks=category_ticks,
        plot_left=0,
        plot_right=WIDTH - 8,
        plot_top=PLOT_TOP,
        plot_bottom=height,
        end_labels=end_labels,
    )
