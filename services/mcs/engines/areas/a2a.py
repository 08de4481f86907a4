"""A2aTx: the a2a area of one transaction's data access (see mcs.engines.base)."""

from __future__ import annotations

from typing import Protocol


class A2aTx(Protocol):
    """Methods are added as the a2a state moves onto the seam (docs/design/engines.md, 2.3)."""
