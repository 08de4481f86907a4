"""How the LLM agent reads streamed chat completions whose Server-Sent Events differ in the details real
servers differ in (CRLF line ends, comments and `event:` lines, `data:` without a space, no `[DONE]`), through
httpx.MockTransport: the byte-level variants the fake server on loopback does not send."""

from __future__ import annotations

import json

import httpx
import pytest

from mcs.agent import Task
from mcs.agent.llm import ChatAgent, ModelUnavailable


def chunk(content: str | None = None, finish: str | None = None) -> str:
    delta = {} if content is None else {"content": content}
    return json.dumps({"model": "served", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


async def answer(body: bytes, content_type: str = "text/event-stream") -> dict:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": content_type}, content=body)

    agent = ChatAgent(base_url="http://model.test/v1", model="m", transport=httpx.MockTransport(handler))
    try:
        return await agent(Task(id="t", type="ask", payload="hi", attempts=1, priority="normal"))
    finally:
        await agent.aclose()


async def test_crlf_comments_event_lines_and_data_without_a_space_are_read():
    body = (
        ": keep-alive\r\n\r\n"
        f"event: message\r\ndata:{chunk('Hel')}\r\n\r\n"
        f"data: {chunk('lo,')}\r\nid: 7\r\n\r\n"
        f"data: {chunk(' world')}\n\n"
        f"data: {chunk(finish='length')}\n\n"
        "data: [DONE]\n\n"
    ).encode()
    assert await answer(body) == {"answer": "Hello, world", "model": "served", "usage": None, "finish_reason": "length"}


async def test_a_stream_with_a_finish_reason_but_no_done_is_complete():
    body = f"data: {chunk('fine')}\n\ndata: {chunk(finish='stop')}\n\n".encode()
    assert (await answer(body))["answer"] == "fine"


async def test_text_after_the_event_stream_content_type_parameters_still_streams():
    body = f"data: {chunk('ok', 'stop')}\n\ndata: [DONE]\n\n".encode()
    assert (await answer(body, "text/event-stream; charset=utf-8"))["answer"] == "ok"


async def test_a_chunk_that_is_not_json_fails_retryably_quoting_it():
    body = f"data: {chunk('half')}\n\ndata: <html>proxy error</html>\n\n".encode()
    with pytest.raises(ModelUnavailable, match=r"not a chat completion chunk after 4 characters.*proxy error"):
        await answer(body)
