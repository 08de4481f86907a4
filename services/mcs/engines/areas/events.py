"""EventTx: the events area of one transaction's data access (see mcs.engines.base)."""

from __future__ import annotations

from typing import Protocol


class EventTx(Protocol):
    """Methods are added as the events state moves onto the seam (docs/design/engines.md, 2.3)."""
