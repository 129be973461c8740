"""Charts drawn on the server as SVG: no script, no library, readable without either."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

from tabpfn_gateway_server.console._reports import DayTotal

__all__ = ["daily_calls_svg"]

_WIDTH = 720
_HEIGHT = 220
_LEFT = 44  # room for the y-axis labels
_BOTTOM = 24  # room for the x-axis labels
_TOP = 10


def _nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (at least 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def daily_calls_svg(days: Sequence[DayTotal], *, title_id: str = "chart-title") -> Markup:
    """A bar per day (calls; the failed part in the error colour), a y-axis with its maximum,
    a date under the first bar of each week. Each bar carries its figures in a ``<title>``
    (a tooltip, and read out by screen readers) and in ``data-`` attributes."""
    top = _nice_ceiling(max((d.calls for d in days), default=0))
    plot_w = _WIDTH - _LEFT
    plot_h = _HEIGHT - _BOTTOM - _TOP
    slot = plot_w / max(len(days), 1)
    bar_w = max(slot * 0.72, 1.0)
    parts = [
        f'<svg class="chart" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" '
        f'aria-labelledby="{escape(title_id)}" xmlns="http://www.w3.org/2000/svg">',
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_WIDTH}" '
        f'y2="{_TOP + plot_h}"/>',
        f'<line class="grid" x1="{_LEFT}" y1="{_TOP}" x2="{_WIDTH}" y2="{_TOP}"/>',
        f'<text class="label" x="{_LEFT - 6}" y="{_TOP + 4}" text-anchor="end">{top}</text>',
        f'<text class="label" x="{_LEFT - 6}" y="{_TOP + plot_h}" text-anchor="end">0</text>',
    ]
    for i, day in enumerate(days):
        x = _LEFT + i * slot + (slot - bar_w) / 2
        height = plot_h * day.calls / top
        failed = plot_h * day.errors / top
        base = _TOP + plot_h
        label = f"{day.day.isoformat()}: {day.calls} calls, {day.errors} failed"
        parts.append(
            f'<g class="day" data-day="{day.day.isoformat()}" data-calls="{day.calls}" '
            f'data-errors="{day.errors}"><title>{escape(label)}</title>'
        )
        if day.calls:
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{base - height:.1f}" '
                f'width="{bar_w:.1f}" height="{height:.1f}"/>'
            )
        if day.errors:
            parts.append(
                f'<rect class="bar-failed" x="{x:.1f}" y="{base - failed:.1f}" '
                f'width="{bar_w:.1f}" height="{failed:.1f}"/>'
            )
        parts.append("</g>")
        if i % 7 == 0:
            parts.append(
                f'<text class="label" x="{x + bar_w / 2:.1f}" y="{_HEIGHT - 6}" '
                f'text-anchor="middle">{day.day.strftime("%b %d")}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - built from numbers and escaped text only
