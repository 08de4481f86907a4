import pytest

from mcs.errors import BadRequest
from mcs.models import ADMIN, Caller
from mcs.namespaces import Kind, check_key, parse_namespace

A, B = Caller(name="a"), Caller(name="b")


def test_the_three_namespaces():
    assert parse_namespace("mesh").kind is Kind.MESH
    ns = parse_namespace("agent:ocasia")
    assert (ns.kind, ns.owner, ns.name) == (Kind.AGENT, "ocasia", "agent:ocasia")
    assert parse_namespace("private:rex-2.b_c").owner == "rex-2.b_c"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "Mesh",
        "Private:a",
        "agent:",
        "agent:..",
        "agent:../x",
        "agent:a/b",
        "agent:a:b",
        "private: a",
        "team:a",
        "mesh:x",
        "agent:" + "a" * 65,
        "agent:é",
    ],
)
def test_everything_else_is_a_bad_request(raw):
    with pytest.raises(BadRequest) as err:
        parse_namespace(raw)
    assert err.value.code == "bad_namespace" and "mesh, agent:NAME or private:NAME" in err.value.message


@pytest.mark.parametrize(
    ("ns", "reader", "writer"),
    [
        ("mesh", {A, B, ADMIN}, {A, B, ADMIN}),
        ("agent:a", {A, B, ADMIN}, {A, ADMIN}),
        ("private:a", {A, ADMIN}, {A, ADMIN}),
    ],
)
def test_who_reads_and_writes(ns, reader, writer):
    parsed = parse_namespace(ns)
    for caller in (A, B, ADMIN):
        assert parsed.can_read(caller) is (caller in reader)
        assert parsed.can_write(caller) is (caller in writer)


def test_keys():
    assert check_key("a/b/c.json") == "a/b/c.json"
    assert check_key("x" * 512)
    for bad in ("", "x" * 513, "a\nb", "tab\there", "nul\x00", "del\x7f"):
        with pytest.raises(BadRequest):
            check_key(bad)
