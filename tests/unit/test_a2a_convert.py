"""The A2A mappings (mcs.a2a.convert, mcs.a2a.push, the face's approval answers): pure functions."""

from __future__ import annotations

import pytest
from a2a.types import Message, Part, Role, TaskState
from a2a.utils.errors import InvalidParamsError
from google.protobuf import struct_pb2
from google.protobuf.json_format import MessageToDict, ParseDict

from mcs.a2a import convert, push
from mcs.a2a.face import _decision, request_credentials
from mcs.agent.a2a import capability_for
from mcs.errors import Unauthorized
from mcs.models import Priority, PushConfig, Task
from mcs.models import TaskState as S


def data(value):
    return Part(data=ParseDict(value, struct_pb2.Value()))


def msg(*parts: Part) -> Message:
    return Message(message_id="m", role=Role.ROLE_USER, parts=list(parts))


def task(state: S, *, type: str = "echo", result=None, error=None) -> Task:  # noqa: A002
    return Task(
        seq=1,
        id="t1",
        type=type,
        payload="p",
        priority=Priority.NORMAL,
        capabilities=(type,),
        route="any",
        aggregate=None,
        state=state,
        assigned_to=None,
        attempts=0,
        max_retries=3,
        claim_ttl=300,
        not_before=None,
        lease_expires_at=None,
        claim_token=None,
        assigned_at=None,
        result=result,
        error=error,
        parent_id=None,
        submitted_by="admin",
        created_at=1.0,
        updated_at=2.5,
    )


@pytest.mark.parametrize(
    ("state", "type_", "expected"),
    [
        (S.QUEUED, "echo", TaskState.TASK_STATE_SUBMITTED),
        (S.ASSIGNED, "echo", TaskState.TASK_STATE_SUBMITTED),
        (S.BLOCKED, "echo", TaskState.TASK_STATE_SUBMITTED),
        (S.RETRYING, "echo", TaskState.TASK_STATE_SUBMITTED),
        (S.CLAIMED, "echo", TaskState.TASK_STATE_WORKING),
        (S.WAITING, "echo", TaskState.TASK_STATE_WORKING),  # a fanout parent
        (S.WAITING, "approval", TaskState.TASK_STATE_INPUT_REQUIRED),
        (S.COMPLETED, "echo", TaskState.TASK_STATE_COMPLETED),
        (S.FAILED, "echo", TaskState.TASK_STATE_FAILED),
        (S.CANCELED, "echo", TaskState.TASK_STATE_CANCELED),
    ],
)
def test_states_map_to_a2a_and_back(state, type_, expected):
    assert convert.a2a_state(state, type_) == expected
    assert state.value in convert.mcs_states(expected)


def test_payloads_from_parts():
    assert convert.payload_of(msg(Part(text="hi"), Part(text="there"))) == "hi\nthere"
    assert convert.payload_of(msg(data({"n": 2, "x": [1, 2.5]}))) == {"n": 2, "x": [1, 2.5]}  # ints stay ints
    assert convert.payload_of(msg(Part(text="see"), data([1]), Part(url="https://x/y.png"))) == {
        "text": "see",
        "data": [[1]],
        "files": [{"url": "https://x/y.png", "filename": None, "media_type": None}],
    }
    with pytest.raises(ValueError, match="inline bytes"):
        convert.payload_of(msg(Part(raw=b"\x00")))


def test_a_completed_task_carries_its_result_as_an_artifact():
    out = MessageToDict(convert.to_task(task(S.COMPLETED, result={"answer": "42", "n": 1}), None))
    assert out["status"]["state"] == "TASK_STATE_COMPLETED" and out["contextId"] == "t1"
    [artifact] = out["artifacts"]
    assert artifact["parts"] == [{"text": "42"}, {"data": {"answer": "42", "n": 1.0}}]
    failed = MessageToDict(convert.to_task(task(S.FAILED, error="boom"), None))
    assert failed["status"]["message"]["parts"] == [{"text": "boom"}] and "artifacts" not in failed


def test_push_skips_changes_inside_one_a2a_state_and_renders_the_rest():
    assert not push.worth_sending(push.Change("c", "queued", "assigned"), "echo")
    assert push.worth_sending(push.Change("c", "assigned", "claimed"), "echo")
    working = push.render(push.Change("c", "assigned", "claimed"), task(S.CLAIMED), None)
    assert '"statusUpdate"' in working and "TASK_STATE_WORKING" in working
    done = push.render(push.Change("c", "claimed", "completed"), task(S.COMPLETED, result="ok"), None)
    assert done.startswith('{"task"') and '"text":"ok"' in done
    config = PushConfig(
        task_id="t", id="c", url="http://x", token="tok", auth_scheme=None, auth_credentials=None, owner="admin"
    )
    unsigned = push.headers(config, secret=None, message_id="m", timestamp=1, body="{}")
    assert unsigned["x-a2a-notification-token"] == "tok" and "webhook-signature" not in unsigned
    assert "webhook-signature" in push.headers(config, secret="whsec_dG9r", message_id="m", timestamp=1, body="{}")


def test_approval_answers():
    assert _decision(msg(Part(text="approve: fine by me"))) == (True, "fine by me")
    assert _decision(msg(Part(text="deny too risky"))) == (False, "too risky")
    assert _decision(msg(data({"approve": False, "reason": "no"}))) == (False, "no")
    with pytest.raises(InvalidParamsError):
        _decision(msg(Part(text="maybe")))


def test_bearer_tokens():
    assert request_credentials({"authorization": "Bearer adm"}, "adm").is_admin
    agent = request_credentials({"authorization": "Bearer bob:mcs_s3cret"}, "adm")
    assert (agent.is_admin, agent.name, agent.secret) == (False, "bob", "mcs_s3cret")
    assert request_credentials({"x-agent-id": "bob", "x-agent-secret": "s"}, None).name == "bob"
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic x"}):
        with pytest.raises(Unauthorized):
            request_credentials(headers, "adm")


def test_skill_ids_become_capabilities():
    assert capability_for("echo") == "echo"
    assert capability_for("echo", "a2a:") == "a2a:echo"
    assert capability_for("Summarize text!") == "Summarize-text"


def test_a2a_state_filters_select_mcs_states():
    assert convert.mcs_filter(TaskState.TASK_STATE_INPUT_REQUIRED) == [("waiting", True)]
    assert convert.mcs_filter(TaskState.TASK_STATE_WORKING) == [("claimed", None), ("waiting", False)]
    assert [s for s, _ in convert.mcs_filter(TaskState.TASK_STATE_SUBMITTED)] == [
        "queued",
        "assigned",
        "blocked",
        "retrying",
    ]
