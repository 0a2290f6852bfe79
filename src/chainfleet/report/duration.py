"""Durations for people to read, in two registers.

A report says how long things took in words a sentence can hold: ``3.50 s``, ``2 min 5 s``,
``1 h 4 min``. A status line redrawn four times a second has no room for that, so with
``compact=True`` the same duration is whole seconds packed tight: ``4s``, ``2m05s``, ``1h04m``.
Both drop the smallest unit once the duration passes an hour: nobody waits on the seconds then.

This module imports nothing of chainfleet, so every renderer (the report's markdown, HTML and
summary lines, the command line's tables and progress display) can use it without an import
circle.

Example::

    >>> fmt_duration(125.4), fmt_duration(125.4, compact=True)
    ('2 min 5 s', '2m05s')
"""

from __future__ import annotations

__all__ = ["fmt_duration"]


def fmt_duration(seconds: float, *, compact: bool = False) -> str:
    """``seconds`` as ``3.50 s`` / ``2 min 5 s`` / ``1 h 4 min``, or with ``compact`` rounded to
    whole seconds first and written ``4s`` / ``2m05s`` / ``1h04m``."""
    if compact:
        return _compact(round(seconds))
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)} min {rest:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes)} min"


def _compact(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds}s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
