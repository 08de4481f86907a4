"""JSON responses, serialised here.

Handlers return a ready `Response` rather than a dict: quart-schema converts a returned dict (and a headers
dict) by building a pydantic TypeAdapter for it on every response, which profiling showed as about 9% of
the api's CPU. A Response passes through untouched.
"""

from __future__ import annotations

import json
from typing import Any

from quart import Response


def respond(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # ensure_ascii: a lone surrogate in stored JSON ("\ud800" is valid JSON) must stay escaped, not fail to encode
    body = json.dumps(data, separators=(",", ":"))
    return Response(body, status=status, headers=headers, content_type="application/json")
