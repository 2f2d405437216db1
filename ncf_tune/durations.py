"""Durations as a user types them (`90s`, `10m`, `2h`, `1h30m`): a leaf module, so that
both the space files (spaces.py) and the time budget (budget.py) can read one without
importing each other."""

from __future__ import annotations

import re

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in `90s`, `10m`, `2h`, `1h30m` or a plain number of seconds; ValueError
    (naming the text) for anything else, zero or negative included."""
    t = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        seconds = float(t)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", t)
        if not parts or "".join(n + u for n, u in parts) != t:
            raise ValueError(f"{text!r} is not a duration like 90s, 10m, 2h or 1h30m")
        seconds = sum(float(n) * UNITS[u] for n, u in parts)
    if not seconds > 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds
