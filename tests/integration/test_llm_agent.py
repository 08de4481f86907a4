"""The LLM agent's handler against a fake OpenAI-compatible server on loopback: what it sends, what it
returns, and how each kind of model-server trouble becomes a retryable or a permanent task failure."""

from __future__ import annotations

import itertools
import json
import re
import socket
from collections.abc import Iterator

import pytest

from mcs.agent import PermanentError, Task
from mcs.agent.llm import ChatAgent, ModelUnavailable
from tests.fake_openai import FakeOpenAI, words


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    yield server
    server.close()


def task(payload: object) -> Task:
    return Task(id="t-1", type="ask", payload=payload, attempts=1, priority="normal")


async def ask(agent: ChatAgent, payload: object) -> dict:
    try:
        return await agent(task(payload))
    finally:
        await agent.aclose()


async def test_answers_with_the_model_reply_usage_and_sends_system_material_and_key(fake):
    fake.materials["code.py"] = "def add(a, b):\n    return a - b\n"
    agent = ChatAgent(
        base_url=fake.url, model="tiny", api_key="sk-secret-123", system="default system", allow_fetch=[fake.address]
    )
    result = await ask(
        agent,
        {"prompt": "Find the bug", "system": "You review code", "url": fake.material_url("code.py"), "max_tokens": 50},
    )
    assert result["answer"].startswith("echo: Find the bug")
    assert "return a - b" in result["answer"]  # the fetched material reached the model
    assert result["model"] == "tiny-fake" and result["finish_reason"] == "stop"
    assert result["usage"]["total_tokens"] == 9
    (sent,) = fake.requests
    assert sent["headers"]["authorization"] == "Bearer sk-secret-123"
    assert sent["body"]["model"] == "tiny" and sent["body"]["stream"] is True and sent["body"]["max_tokens"] == 50
    assert sent["body"]["stream_options"] == {"include_usage": True}  # so a streamed answer still has its usage
    assert sent["body"]["messages"][0] == {"role": "system", "content": "You review code"}
    assert "sk-secret" not in repr(agent)


async def test_a_plain_string_payload_is_the_prompt_and_no_key_means_no_authorization(fake):
    result = await ask(ChatAgent(base_url=fake.url + "/", model="m", system="be brief"), "hello")
    assert result["answer"] == "echo: hello"
    (sent,) = fake.requests
    assert "authorization" not in sent["headers"]
    assert sent["body"]["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello"},
    ]


@pytest.mark.parametrize(
    ("status", "hint"), [(400, "fake says 400"), (401, "check the API key"), (404, "check the base URL and model")]
)
async def test_client_errors_from_the_model_server_fail_for_good(fake, status, hint):
    with pytest.raises(PermanentError) as caught:
        await ask(ChatAgent(base_url=fake.url, model="m"), f"[status={status}]")
    assert f"HTTP {status}" in str(caught.value) and hint in str(caught.value)


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_overload_and_server_errors_are_retryable(fake, status):
    with pytest.raises(ModelUnavailable) as caught:
        await ask(ChatAgent(base_url=fake.url, model="m"), f"[status={status}]")
    assert not isinstance(caught.value, PermanentError)
    assert f"HTTP {status}: fake says {status}" in str(caught.value)


async def test_a_model_that_does_not_answer_in_time_is_a_retryable_timeout(fake):
    with pytest.raises(ModelUnavailable, match="did not answer within 0.3 s"):
        await ask(ChatAgent(base_url=fake.url, model="m", timeout=0.3), "[hang]")


async def test_an_answer_that_is_not_a_chat_completion_is_retryable(fake):
    with pytest.raises(ModelUnavailable, match="not a chat completion"):
        await ask(ChatAgent(base_url=fake.url, model="m"), "[garbage]")


async def test_a_model_server_that_is_not_there_is_retryable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    with pytest.raises(ModelUnavailable, match="cannot reach the model server"):
        await ask(ChatAgent(base_url=f"http://127.0.0.1:{port}/v1", model="m"), "hi")


async def test_bad_payloads_and_missing_material_fail_for_good(fake):
    for payload, message in [
        ({}, "'prompt'"),
        ({"prompt": ""}, "'prompt'"),
        (42, "'prompt'"),
        ({"prompt": "x", "url": "file:///etc/passwd"}, "http:// or https://"),
        ({"prompt": "x", "temperature": "hot"}, "'temperature'"),
        ({"prompt": "x", "url": fake.material_url("absent")}, "HTTP 404"),
    ]:
        with pytest.raises(PermanentError, match=message):
            await ask(ChatAgent(base_url=fake.url, model="m", allow_fetch=[fake.address]), payload)
    assert fake.requests == []  # none of them reached the model


def test_the_base_url_must_be_http():
    with pytest.raises(ValueError, match="http:// or https://"):
        ChatAgent(base_url="localhost:11434", model="m")


async def test_huge_material_is_cut_without_being_read_whole(fake, monkeypatch):
    from mcs.agent import llm

    monkeypatch.setattr(llm, "MAX_MATERIAL", 1000)
    fake.materials["big.txt"] = "x" * 1_000_000
    result = await ask(
        ChatAgent(base_url=fake.url, model="m", allow_fetch=[fake.address]),
        {"prompt": "Summarise", "url": fake.material_url("big.txt")},
    )
    (sent,) = fake.requests
    prompt = json.dumps(sent)
    assert "x" * 1000 in prompt and "x" * 1001 not in prompt
    assert "[... cut: the rest of the document was not read]" in prompt
    assert result["answer"]


# ------------------------------------------------------------------ the egress policy on fetches


async def test_a_task_url_on_loopback_is_refused_by_default_and_nothing_is_fetched(fake):
    fake.materials["secret.txt"] = "internal only"
    for url in [fake.material_url("secret.txt"), fake.material_url("secret.txt").replace("127.0.0.1", "localhost")]:
        with pytest.raises(PermanentError) as caught:
            await ask(ChatAgent(base_url=fake.url, model="m"), {"prompt": "leak it", "url": url})
        assert "loopback address, not allowed by --allow-fetch" in str(caught.value)
    with pytest.raises(PermanentError, match="cloud metadata address: refused always"):
        await ask(
            ChatAgent(base_url=fake.url, model="m", allow_fetch=["169.254.0.0/16"]),
            {"prompt": "creds?", "url": "http://169.254.169.254/latest/meta-data/iam/security-credentials/"},
        )
    assert fake.fetched == [] and fake.requests == []  # nothing fetched, the model never asked


async def test_each_redirect_hop_is_checked(fake):
    inside = FakeOpenAI()  # another loopback service, on a port the agent was not allowed
    try:
        inside.materials["secret.txt"] = "internal only"
        fake.materials["ok.txt"] = "public notes"
        fake.redirects["away"] = inside.material_url("secret.txt")
        fake.redirects["here"] = "/material/ok.txt"
        fake.redirects["loop"] = "/redirect/loop"
        agent = ChatAgent(base_url=fake.url, model="m", allow_fetch=[fake.address])
        result = await agent(task({"prompt": "read", "url": f"http://{fake.address}/redirect/here"}))
        assert "public notes" in result["answer"]  # a hop the policy allows is followed
        with pytest.raises(PermanentError, match="loopback address, not allowed by --allow-fetch"):
            await agent(task({"prompt": "read", "url": f"http://{fake.address}/redirect/away"}))
        assert inside.fetched == []
        with pytest.raises(PermanentError, match="more than 5 redirects"):
            await agent(task({"prompt": "read", "url": f"http://{fake.address}/redirect/loop"}))
        await agent.aclose()
    finally:
        inside.close()


async def test_a_synthesis_prompt_holds_every_childs_findings_of_a_fanout_dependency(fake):
    fanout = {
        "children": [
            {"agent": "r1", "task_id": "k1", "state": "completed", "result": {"answer": "cats sleep 16 hours"}},
            {"agent": "r2", "task_id": "k2", "state": "completed", "result": {"facts": ["cats purr at 25 Hz"]}},
            {"agent": "r3", "task_id": "k3", "state": "failed", "error": "corpus missing"},
        ]
    }
    inputs = {"research": fanout, "workflow": {"question": "cats?"}}
    synth = Task(id="t-2", type="ask", payload="Synthesise", attempts=1, priority="normal", inputs=inputs)
    agent = ChatAgent(base_url=fake.url, model="m")
    try:
        await agent(synth)
    finally:
        await agent.aclose()
    (sent,) = fake.requests
    prompt = sent["body"]["messages"][-1]["content"]
    assert prompt.startswith("Synthesise\n\n")
    assert prompt.index("=== input workflow ===") < prompt.index("=== input research ===")
    block = prompt[prompt.index("=== input research ===") : prompt.index("=== end of input research ===")]
    assert "--- from r1 ---\ncats sleep 16 hours" in block
    assert "--- from r2 ---" in block and "cats purr at 25 Hz" in block
    assert "--- from r3 (failed) ---\nno result: corpus missing" in block
    assert '"question": "cats?"' in prompt


async def test_inputs_beyond_the_budget_are_cut_fairly_and_the_prompt_says_so(fake):
    inputs = {"small": "short and whole", "big": "q" * 5000, "bigger": "z" * 9000}
    synth = Task(id="t-3", type="ask", payload="Merge", attempts=1, priority="normal", inputs=inputs)
    agent = ChatAgent(base_url=fake.url, model="m", max_input_chars=2015)
    try:
        await agent(synth)
    finally:
        await agent.aclose()
    prompt = fake.requests[0]["body"]["messages"][-1]["content"]
    assert "=== input small ===\nshort and whole\n=== end of input small ===" in prompt
    assert prompt.count("q") == 1000 and prompt.count("z") == 1000  # the rest of the budget, split evenly
    assert "[... cut: 4000 of 5000 characters of this input left out to fit the context budget]" in prompt
    assert "[... cut: 8000 of 9000 characters" in prompt


# ------------------------------------------------------------------ streamed answers and progress


class Reports:
    """What a handler reported with `task.progress`, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str | None, float | None]] = []

    def __call__(self, message: str | None, percent: float | None) -> None:
        self.sent.append((message, percent))


def reporting_task(payload: object, reports: Reports) -> Task:
    return Task(id="t-s", type="ask", payload=payload, attempts=1, priority="normal", reporter=reports)


LONG_PROMPT = " ".join(f"word{i}" for i in range(20))


async def test_a_streamed_answer_is_the_whole_answer_and_reports_progress_at_most_every_interval(fake):
    whole = await ask(ChatAgent(base_url=fake.url, model="m", stream=False), LONG_PROMPT)
    ticks = itertools.count(step=0.5)  # the clock moves half a second per look: once at the start, once per chunk
    reports = Reports()
    agent = ChatAgent(base_url=fake.url, model="m", progress_interval=2.0, clock=lambda: next(ticks))
    try:
        streamed = await agent(reporting_task({"prompt": LONG_PROMPT, "max_tokens": 40}, reports))
    finally:
        await agent.aclose()
    assert (
        streamed
        == whole
        == {
            "answer": f"echo: {LONG_PROMPT}",
            "model": "m-fake",
            "usage": {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 9},
            "finish_reason": "stop",
        }
    )
    assert [r["body"]["stream"] for r in fake.requests] == [False, True]
    pieces = words(f"echo: {LONG_PROMPT}")  # 21 chunks at 0.5 s each: a report every 4th, at 2, 4, 6, 8, 10 s
    assert reports.sent == [
        (f"streaming: {len(''.join(pieces[:n]))} chars", round(100 * n / 40, 1)) for n in (4, 8, 12, 16, 20)
    ]


async def test_no_progress_is_reported_before_the_interval_has_passed(fake):
    reports = Reports()
    agent = ChatAgent(base_url=fake.url, model="m", progress_interval=2.0, clock=lambda: 0.0)
    try:
        result = await agent(reporting_task(LONG_PROMPT, reports))
    finally:
        await agent.aclose()
    assert result["answer"] == f"echo: {LONG_PROMPT}" and reports.sent == []


async def test_a_server_that_answers_a_stream_request_with_json_is_read_as_a_whole_completion(fake):
    fake.streaming = "json"
    result = await ask(ChatAgent(base_url=fake.url, model="m"), "hello there")
    assert fake.requests[0]["body"]["stream"] is True
    assert result == {
        "answer": "echo: hello there",
        "model": "m-fake",
        "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 9},
        "finish_reason": "stop",
    }


async def test_a_server_that_refuses_to_stream_fails_for_good_and_works_without_streaming(fake):
    fake.streaming = "refuse"
    with pytest.raises(
        PermanentError, match=r"HTTP 400 \(if this server cannot stream, use --no-stream\): streaming is not"
    ):
        await ask(ChatAgent(base_url=fake.url, model="m"), "hello")
    result = await ask(ChatAgent(base_url=fake.url, model="m", stream=False), "hello")
    assert result["answer"] == "echo: hello"
    assert [r["body"]["stream"] for r in fake.requests] == [True, False]
    assert "stream_options" not in fake.requests[1]["body"]


@pytest.mark.parametrize(
    ("directive", "message"),
    [
        ("[cut=4]", "stream broke off after {n} characters of the answer: RemoteProtocolError"),
        ("[end=4]", "stream ended after {n} characters of the answer without finishing it"),
        ("[oops=4]", "reported an error in the middle of its answer (after {n} characters): fake ran out of memory"),
    ],
)
async def test_a_stream_that_breaks_off_fails_retryably_saying_how_far_it_got(fake, directive, message):
    prompt = f"{directive} one two three"
    n = len("".join(words(f"echo: {prompt}")[:4]))  # what arrived before the trouble: 4 words
    with pytest.raises(ModelUnavailable, match=re.escape(message.format(n=n))) as caught:
        await ask(ChatAgent(base_url=fake.url, model="m"), prompt)
    assert not isinstance(caught.value, PermanentError)


async def test_a_model_that_goes_silent_mid_stream_is_a_retryable_timeout():
    slow = FakeOpenAI(chunk_delay=5.0)
    try:
        with pytest.raises(ModelUnavailable, match=r"went silent for 0.3 s in the middle of its answer \(after 0 char"):
            await ask(ChatAgent(base_url=slow.url, model="m", timeout=0.3), "hello")
    finally:
        slow.close()
