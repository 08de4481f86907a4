"""Memory namespaces and who may do what in them. Pure: no I/O, easy to test.

mesh            every agent reads and writes
agent:NAME      NAME writes, every agent reads
private:NAME    NAME alone reads and writes
the admin reads and writes them all
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from mcs.errors import BadRequest
from mcs.models import Caller

AGENT_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
NAMESPACE = rf"^(?:(mesh)|(agent|private):({AGENT_NAME}))$"
_NAMESPACE = re.compile(NAMESPACE)
MAX_KEY_CHARS = 512


class Kind(StrEnum):
    MESH = "mesh"
    AGENT = "agent"
    PRIVATE = "private"


@dataclass(frozen=True)
class Namespace:
    kind: Kind
    owner: str | None  # the agent named in agent:NAME or private:NAME

    @property
    def name(self) -> str:
        return self.kind.value if self.owner is None else f"{self.kind.value}:{self.owner}"

    def can_read(self, caller: Caller) -> bool:
        return caller.is_admin or self.kind is not Kind.PRIVATE or caller.name == self.owner

    def can_write(self, caller: Caller) -> bool:
        return caller.is_admin or self.kind is Kind.MESH or caller.name == self.owner


def parse_namespace(raw: str) -> Namespace:
    """`mesh`, `agent:NAME` or `private:NAME`, exactly (case matters); anything else is a 400."""
    match = _NAMESPACE.match(raw)
    if match is None:
        shown = raw if len(raw) <= 80 else raw[:80] + "..."
        raise BadRequest(
            f"namespace {shown!r} is not one of mesh, agent:NAME or private:NAME "
            "(NAME: letters, digits, '.', '_' or '-', starting with a letter or digit)",
            code="bad_namespace",
        )
    if match.group(1):
        return Namespace(Kind.MESH, None)
    return Namespace(Kind(match.group(2)), match.group(3))


def check_key(key: str) -> str:
    """Keys are 1 to 512 printable characters; `/` is allowed, so keys can be paths."""
    if not 1 <= len(key) <= MAX_KEY_CHARS:
        raise BadRequest(f"a key is 1 to {MAX_KEY_CHARS} characters, not {len(key)}", code="bad_key")
    if not key.isprintable():
        raise BadRequest("a key may not hold control or other unprintable characters", code="bad_key")
    return key
