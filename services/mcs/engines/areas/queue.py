"""QueueTx: the queue area of one transaction's data access (see mcs.engines.base)."""

from __future__ import annotations

from typing import Protocol


class QueueTx(Protocol):
    """Methods are added as the queue state moves onto the seam (docs/design/engines.md, 2.3)."""
