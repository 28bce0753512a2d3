"""Wording shared by every front end (the CLI, the docks, notebooks)."""

from __future__ import annotations

import math


def format_duration(seconds: float) -> str:
    """``'40 s'``, ``'3 min'``, ``'1 h 05 min'``; ``'?'`` when unknown."""
    if not math.isfinite(seconds):
        return '?'
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f'{seconds:.0f} s'
    minutes = round(seconds / 60)
    if minutes < 60:
        return f'{minutes} min'
    return f'{minutes // 60} h {minutes % 60:02d} min'
