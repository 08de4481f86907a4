"""An agent that answers tasks through any OpenAI-compatible chat API (Ollama, vLLM, llama.cpp, OpenAI).

Task payload (a plain string is taken as the prompt):

    {"prompt": "Review this code", "system": "You are a careful reviewer",   # system: optional
     "url": "https://example.org/file.py",                                   # optional: fetched, appended
     "temperature": 0.2, "max_tokens": 800}                                  # optional

Result: `{"answer": "...", "model": "...", "usage": {...} | null, "finish_reason": "stop"}`.

The answer is streamed (`"stream": true`, Server-Sent Events) unless `stream=False` (`--no-stream`): while it
comes, the task reports progress (`streaming: 1234 chars`) at most every PROGRESS_INTERVAL seconds, so
`mcs watch` shows a long answer growing; the result is the same as without streaming. A server that
answers a stream request with a plain JSON completion is read as such. `timeout` is how long the model may
stay silent: before its first word and, when streaming, between two chunks. A stream that breaks off (the
connection drops, it ends without `[DONE]` or a finish reason, or it sends an error) fails the task
retryably, saying how much had arrived.

A task with dependencies (or a workflow's step) brings their results in `inputs`; they go into the
prompt after it, one delimited block each (`=== input <id> ===` ... `=== end of input <id> ===`; a fanout
dependency's children each get a `--- from <agent> ---` part; an LLM answer as its text, anything else as
JSON), within `max_input_chars` (cut, fairly between inputs, with a note saying so): what a synthesis step
needs to merge every researcher's findings.

The `url` is fetched through the egress policy (mcs.egress), each redirect hop checked again: public
addresses only, unless `allow_fetch` (`--allow-fetch`) names more; link-local and metadata never.

Failures say what went wrong and whether trying again can help: the model server's 429, 5xx, timeouts and
refused connections fail the task retryably (MCS retries with backoff); its other 4xx (bad request, wrong
key, unknown model) and a payload without a prompt fail it for good. The API key is sent as a bearer token
and never logged or put in an error.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import httpx

from mcs import egress
from mcs.agent.runner import PermanentError, RetryableError, Task

log = logging.getLogger("mcs.agent.llm")

DEFAULT_TIMEOUT = 120.0  # seconds for one chat completion (local models on a CPU are slow)
FETCH_TIMEOUT = 30.0  # seconds to fetch a payload's `url`
MAX_REDIRECTS = 5  # hops followed when fetching a payload's `url`, each checked by the egress policy
MAX_MATERIAL = 200_000  # characters of fetched material passed to the model; the rest is cut off
MAX_INPUT_CHARS = 100_000  # characters of a task's `inputs` put into the prompt (all blocks together)
ERROR_EXCERPT = 300  # characters of a model server's error body quoted in the task's error
API_KEY_ENV = ("MCS_LLM_API_KEY", "OPENAI_API_KEY")  # where `mcs agent llm` looks for a key, in order
PROGRESS_INTERVAL = 2.0  # seconds: the least time between two progress reports while an answer streams


def _next_hop(current: httpx.URL, location: str) -> httpx.URL:
    """Where a redirect points, relative to the URL that answered; only http(s) (the policy checks the rest)."""
    try:
        target = current.join(location)
    except httpx.InvalidURL as exc:
        raise PermanentError(f"a redirect to an invalid URL: {exc}") from None
    if target.scheme not in ("http", "https"):
        raise PermanentError(f"a redirect to {target.scheme}: only http:// and https:// are fetched")
    return target


def _as_text(value: Any) -> str:
    """An LLM agent's result as its answer text; a string as it is; anything else as JSON."""
    if isinstance(value, dict) and isinstance(value.get("answer"), str):
        return str(value["answer"])
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=1, ensure_ascii=False, default=str)


def _input_text(value: Any) -> str:
    """One input's text: a fanout's collected children each as their own part, else `_as_text`."""
    children = value.get("children") if isinstance(value, dict) and "aggregate" not in value else None
    if not isinstance(children, list):
        return _as_text(value)
    parts = []
    for child in children:
        if not isinstance(child, dict):
            continue
        who = child.get("agent") or child.get("task_id") or "?"
        if child.get("state") == "completed":
            parts.append(f"--- from {who} ---\n{_as_text(child.get('result'))}")
        else:
            parts.append(f"--- from {who} ({child.get('state')}) ---\nno result: {_as_text(child.get('error'))}")
    return "\n".join(parts) if parts else _as_text(value)


def _fair_shares(sizes: list[int], budget: int) -> list[int]:
    """Characters each block may keep: small ones whole, the rest of the budget split evenly among the big."""
    shares = [0] * len(sizes)
    left, pending = budget, sorted(range(len(sizes)), key=lambda i: sizes[i])
    while pending:
        share = left // len(pending)
        i = pending.pop(0)
        shares[i] = min(sizes[i], share)
        left -= shares[i]
    return shares


def format_inputs(inputs: Mapping[str, Any], budget: int = MAX_INPUT_CHARS) -> str:
    """The task's inputs as delimited blocks for the prompt, at most about `budget` characters of content;
    what is cut is said where it was cut. Empty when there are none."""
    if not inputs:
        return ""
    names = sorted(inputs, key=lambda k: (k != "workflow", list(inputs).index(k)))
    texts = [_input_text(inputs[k]) for k in names]
    shares = _fair_shares([len(t) for t in texts], max(budget, 0))
    blocks = []
    for name, text, share in zip(names, texts, shares, strict=True):
        if len(text) > share:
            text = text[:share] + (
                f"\n[... cut: {len(text) - share} of {len(text)} characters of this input left out"
                " to fit the context budget]"
            )
        blocks.append(f"=== input {name} ===\n{text}\n=== end of input {name} ===")
    return "The results this task depends on:\n\n" + "\n\n".join(blocks)


class ModelUnavailable(RetryableError):
    """The model server could not answer now (timeout, 429, 5xx, connection refused): worth retrying."""


def _server_message(response: httpx.Response) -> str:
    """The model server's own words about an error: OpenAI's `{"error": {"message"}}`, Ollama's
    `{"error": "..."}`, or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:ERROR_EXCERPT].strip() or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body))
        if isinstance(err, dict):
            err = err.get("message", err)
        return str(err)[:ERROR_EXCERPT]
    return str(body)[:ERROR_EXCERPT]


class ChatAgent:
    """The handler: `Agent(ChatAgent(base_url=..., model=...), capabilities=[...])`."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        system: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        temperature: float | None = None,
        max_tokens: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        allow_fetch: Sequence[str] = (),
        max_input_chars: int = MAX_INPUT_CHARS,
        stream: bool = True,
        progress_interval: float = PROGRESS_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`transport` is for the model server (tests); a task's `url` is always fetched through the egress
        policy: public addresses, plus the `allow_fetch` entries (CIDRs, addresses, host names, each with an
        optional :PORT; ValueError names a bad one). `stream` asks for the answer as it is generated and
        reports progress every `progress_interval` seconds of `clock` (tests pass their own)."""
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"the base URL must start with http:// or https://, not {base_url!r}")
        self.fetch_policy = egress.fetch_policy(allow_fetch)
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.system = system
        self.timeout = timeout
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_input_chars = max_input_chars
        self.stream = stream
        self.progress_interval = progress_interval
        self.clock = clock
        self._api_key = api_key
        self._transport = transport
        self._http: httpx.AsyncClient | None = None

    def __repr__(self) -> str:  # never the key
        return f"ChatAgent(base_url={self.base_url!r}, model={self.model!r})"

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)), transport=self._transport
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def __call__(self, task: Task) -> dict[str, Any]:
        request = self._parse(task.payload)
        user = request["prompt"]
        if request.get("url"):
            material = await self._fetch(request["url"])
            user = f"{user}\n\n--- material from {request['url']} ---\n{material}"
        if task.inputs:
            user = f"{user}\n\n{format_inputs(task.inputs, self.max_input_chars)}"
        messages = []
        system = request.get("system") or self.system
        if system:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": user})
        body: dict[str, Any] = {"model": self.model, "messages": messages, "stream": self.stream}
        if self.stream:
            body["stream_options"] = {"include_usage": True}  # the usage comes in a last chunk
        for key, default in (("temperature", self.temperature), ("max_tokens", self.max_tokens)):
            value = request.get(key, default)
            if value is not None:
                body[key] = value
        return await (self._stream(body, task) if self.stream else self._complete(body))

    @staticmethod
    def _parse(payload: Any) -> dict[str, Any]:
        if isinstance(payload, str):
            payload = {"prompt": payload}
        if not isinstance(payload, dict) or not isinstance(payload.get("prompt"), str) or not payload["prompt"]:
            raise PermanentError("the payload needs a non-empty 'prompt' string (or be one)")
        if payload.get("url") is not None and not (
            isinstance(payload["url"], str) and payload["url"].startswith(("http://", "https://"))
        ):
            raise PermanentError("'url' must be an http:// or https:// URL")
        if payload.get("system") is not None and not isinstance(payload["system"], str):
            raise PermanentError("'system' must be a string")
        temperature = payload.get("temperature")
        if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, int | float)):
            raise PermanentError("'temperature' must be a number")
        max_tokens = payload.get("max_tokens")
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)):
            raise PermanentError("'max_tokens' must be an integer")
        return payload

    async def _fetch(self, url: str) -> str:
        """The text at `url` (no credentials sent), cut to MAX_MATERIAL characters. Every hop goes through
        the fetch policy; redirects are followed by hand, at most MAX_REDIRECTS, each one checked again."""
        # Streamed, and read only as far as needed: a huge (or endless) body must not fill the agent's memory.
        limit = MAX_MATERIAL * 4  # bytes: enough for MAX_MATERIAL characters of UTF-8
        chunks: list[bytes] = []
        size, more = 0, False
        transport = egress.EgressTransport(self.fetch_policy)
        try:
            async with httpx.AsyncClient(
                timeout=FETCH_TIMEOUT, follow_redirects=False, transport=transport, trust_env=False
            ) as c:
                hop = httpx.URL(url)
                for _ in range(MAX_REDIRECTS + 1):
                    async with c.stream("GET", hop) as response:
                        status, encoding = response.status_code, response.encoding or "utf-8"
                        location = response.headers.get("location")
                        if response.is_redirect and location:
                            hop = _next_hop(hop, location)
                            continue
                        if status < 400:
                            async for chunk in response.aiter_bytes():
                                chunks.append(chunk)
                                size += len(chunk)
                                if size > limit:
                                    more = True
                                    break
                        break
                else:
                    raise PermanentError(f"fetching {url}: more than {MAX_REDIRECTS} redirects")
        except egress.EgressRefused as exc:
            raise PermanentError(f"fetching {url} refused: {exc}") from None
        except httpx.TimeoutException as exc:
            raise ModelUnavailable(f"fetching {url} timed out after {FETCH_TIMEOUT:g} s") from exc
        except httpx.TransportError as exc:
            raise ModelUnavailable(f"cannot fetch {url}: {exc}") from exc
        if status >= 500 or status == 429:
            raise ModelUnavailable(f"fetching {url} answered HTTP {status}")
        if status >= 400:
            raise PermanentError(f"fetching {url} answered HTTP {status}")
        text = b"".join(chunks)[:limit].decode(encoding, errors="replace")
        if more or len(text) > MAX_MATERIAL:
            text = text[:MAX_MATERIAL] + "\n[... cut: the rest of the document was not read]"
        return text

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    async def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.base_url}/chat/completions"
        try:
            response = await self._client().post(url, json=body, headers=self._headers())
        except httpx.TimeoutException as exc:
            raise self._silent(None) from exc
        except httpx.TransportError as exc:
            raise ModelUnavailable(f"cannot reach the model server at {self.base_url}: {exc}") from exc
        self._check_status(response)
        return self._completion(response)

    async def _stream(self, body: dict[str, Any], task: Task) -> dict[str, Any]:
        """The answer asked for with `"stream": true`, read chunk by chunk, reporting progress on `task`."""
        url = f"{self.base_url}/chat/completions"
        answer: _StreamedAnswer | None = None  # set once the server has started answering
        try:
            async with self._client().stream("POST", url, json=body, headers=self._headers()) as response:
                if response.status_code >= 400:
                    await response.aread()
                    self._check_status(response, streaming=True)
                if not response.headers.get("content-type", "").startswith("text/event-stream"):
                    await response.aread()  # a server that does not stream answers with the whole completion
                    return self._completion(response)
                answer = _StreamedAnswer()
                await self._read_stream(response, answer, task, body.get("max_tokens"))
        except httpx.TimeoutException as exc:
            raise self._silent(answer) from exc
        except httpx.RequestError as exc:
            if answer is None:
                raise ModelUnavailable(f"cannot reach the model server at {self.base_url}: {exc}") from exc
            raise ModelUnavailable(
                f"the model server's stream broke off after {answer.chars} characters of the answer: {_error_text(exc)}"
            ) from exc
        if not answer.done and answer.finish_reason is None:
            raise ModelUnavailable(
                f"the model server's stream ended after {answer.chars} characters of the answer without "
                "finishing it (no finish reason, no [DONE]): the answer is incomplete"
            )
        return {
            "answer": "".join(answer.parts),
            "model": answer.model or self.model,
            "usage": answer.usage,
            "finish_reason": answer.finish_reason,
        }

    async def _read_stream(
        self, response: httpx.Response, answer: _StreamedAnswer, task: Task, max_tokens: Any
    ) -> None:
        last_report = self.clock()
        async for data in _sse_data(response):
            if data.strip() == "[DONE]":
                answer.done = True
                return
            try:
                chunk = json.loads(data)
            except ValueError:
                raise ModelUnavailable(
                    f"the model server's stream holds something that is not a chat completion chunk after "
                    f"{answer.chars} characters of the answer: {data[:ERROR_EXCERPT]!r}"
                ) from None
            grew = answer.add(chunk)
            if grew and (now := self.clock()) - last_report >= self.progress_interval:
                last_report = now
                percent = None
                if isinstance(max_tokens, int) and max_tokens > 0:  # one chunk is about one token
                    percent = min(99.0, round(100.0 * answer.chunks / max_tokens, 1))
                task.progress(message=f"streaming: {answer.chars} chars", percent=percent)

    def _silent(self, answer: _StreamedAnswer | None) -> ModelUnavailable:
        if answer is None:
            return ModelUnavailable(f"the model server at {self.base_url} did not answer within {self.timeout:g} s")
        return ModelUnavailable(
            f"the model server went silent for {self.timeout:g} s in the middle of its answer "
            f"(after {answer.chars} characters)"
        )

    def _check_status(self, response: httpx.Response, *, streaming: bool = False) -> None:
        status = response.status_code
        if status == 429 or status >= 500:
            raise ModelUnavailable(f"the model server answered HTTP {status}: {_server_message(response)}")
        if status >= 400:
            hint = {401: " (check the API key)", 403: " (check the API key)", 404: " (check the base URL and model)"}
            if streaming:  # a server that cannot stream may refuse `stream` or `stream_options`
                hint |= dict.fromkeys((400, 422), " (if this server cannot stream, use --no-stream)")
            raise PermanentError(
                f"the model server answered HTTP {status}{hint.get(status, '')}: {_server_message(response)}"
            )

    def _completion(self, response: httpx.Response) -> dict[str, Any]:
        """The result from a whole (non-streamed) chat completion."""
        try:
            data = response.json()
            choice = data["choices"][0]
            answer = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ModelUnavailable(
                f"the model server's answer is not a chat completion: {response.text[:ERROR_EXCERPT]!r}"
            ) from exc
        return {
            "answer": answer,
            "model": data.get("model") or self.model,
            "usage": data.get("usage"),
            "finish_reason": choice.get("finish_reason"),
        }


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The `data` of each Server-Sent Event in the body (multi-line data joined with newlines; comments,
    `event:`, `id:` and `retry:` lines skipped)."""
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value.removeprefix(" "))
    if data:
        yield "\n".join(data)


class _StreamedAnswer:
    """A streamed chat completion put together from its chunks, as the whole completion would have said it."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.chars = 0
        self.chunks = 0  # chunks that carried text
        self.model: str | None = None
        self.usage: Any = None
        self.finish_reason: str | None = None
        self.done = False  # `data: [DONE]` seen

    def add(self, chunk: Any) -> bool:
        """Take in one chunk; True when it carried text. A chunk that is an error, or is no chunk at all,
        raises ModelUnavailable."""
        if not isinstance(chunk, dict):
            raise ModelUnavailable(f"the model server's stream holds a chunk that is not an object: {chunk!r:.300}")
        if chunk.get("error") is not None:
            err = chunk["error"]
            message = err.get("message", err) if isinstance(err, dict) else err
            raise ModelUnavailable(
                f"the model server reported an error in the middle of its answer (after {self.chars} "
                f"characters): {str(message)[:ERROR_EXCERPT]}"
            )
        if isinstance(chunk.get("model"), str) and chunk["model"] and self.model is None:
            self.model = chunk["model"]
        if chunk.get("usage") is not None:
            self.usage = chunk["usage"]
        grew = False
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # only the first choice, as the whole completion's result takes
            delta = choice.get("delta")
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str) and content:
                self.parts.append(content)
                self.chars += len(content)
                grew = True
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        self.chunks += grew
        return grew


def check_model_server(base_url: str, model: str, *, api_key: str | None = None, timeout: float = 5.0) -> str | None:
    """A warning when the model server does not answer `GET {base_url}/models` or does not list `model`, else
    None. Run once at start so `mcs agent llm` does not report online while every task would fail."""
    url = base_url.rstrip("/") + "/models"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(url, headers=headers, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        return (
            f"the model server at {base_url} does not answer ({type(exc).__name__}): tasks will fail (retryably) "
            "until it does; is it running, and is --base-url right?"
        )
    if response.status_code in (401, 403):
        return f"the model server at {base_url} refused the API key (HTTP {response.status_code}): set MCS_LLM_API_KEY"
    if response.status_code >= 400:
        return None  # some servers have no /models: the first task will tell
    try:
        listed = [str(m.get("id")) for m in response.json().get("data", []) if isinstance(m, dict)]
    except (ValueError, AttributeError):
        return None
    if listed and model not in listed and f"{model}:latest" not in listed:
        shown = ", ".join(listed[:10]) + (" ..." if len(listed) > 10 else "")
        return f"the model server at {base_url} does not list model {model!r} (it has: {shown})"
    return None
