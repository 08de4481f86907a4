"""MemoryTx: the memory area of one transaction's data access (see mcs.engines.base)."""

from __future__ import annotations

from typing import Protocol


class MemoryTx(Protocol):
    """Methods are added as the memory state moves onto the seam (docs/design/engines.md, 2.3)."""
