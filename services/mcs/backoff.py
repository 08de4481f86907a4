"""Retry delays, pure so they are easy to test."""

from __future__ import annotations


def retry_delay(attempts: int, *, base: float, cap: float) -> float:
    """Seconds to wait before retry number `attempts` (1-based): base, 2*base, 4*base, ... capped at `cap`."""
    if attempts < 1:
        return 0.0
    # Bound the exponent so a huge attempt count cannot overflow a float.
    return float(min(cap, base * 2 ** min(attempts - 1, 62)))
