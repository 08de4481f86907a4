from mcs.routing import Candidate, allowed, capable, fanout_targets, pick_agent


def agent(name, caps, *, load=0, pushable=True, last=0.0, capacity=10):
    return Candidate(
        name=name, capabilities=frozenset(caps), pushable=pushable, load=load, last_assigned_at=last, capacity=capacity
    )


def test_capability_match_is_a_subset_match():
    assert capable({"review", "shell"}, ["review"])
    assert capable({"review"}, [])
    assert not capable({"review"}, ["review", "gpu"])


def test_route_any_picks_only_capable_agents():
    agents = [agent("a", {"shell"}), agent("b", {"review", "gpu"})]
    assert pick_agent(route="any", required=["review"], candidates=agents) == "b"
    assert pick_agent(route="any", required=["review", "shell"], candidates=agents) is None


def test_any_prefers_the_least_loaded_then_the_longest_idle():
    agents = [agent("a", {"x"}, load=2), agent("b", {"x"}, load=1, last=50.0), agent("c", {"x"}, load=1, last=10.0)]
    assert pick_agent(route="any", required=["x"], candidates=agents) == "c"


def test_named_route_goes_to_that_agent_only():
    agents = [agent("a", {"x"}), agent("b", {"x"}, load=9)]
    assert pick_agent(route="b", required=["x"], candidates=agents) == "b"
    assert pick_agent(route="zed", required=["x"], candidates=agents) is None
    assert allowed("any", "a") and allowed("b", "b") and not allowed("b", "a")


def test_polling_agents_are_never_pushed_to():
    assert pick_agent(route="any", required=["x"], candidates=[agent("a", {"x"}, pushable=False)]) is None


def test_rejected_agents_are_excluded_and_lapsed_ones_are_a_last_resort():
    agents = [agent("a", {"x"}), agent("b", {"x"}, load=5)]
    assert pick_agent(route="any", required=["x"], candidates=agents, avoid={"a": True}) == "b"
    assert pick_agent(route="any", required=["x"], candidates=agents, avoid={"a": False}) == "b"
    assert pick_agent(route="any", required=["x"], candidates=agents[:1], avoid={"a": False}) == "a"
    assert pick_agent(route="any", required=["x"], candidates=agents[:1], avoid={"a": True}) is None


def test_fanout_targets_every_capable_agent_pushable_or_not():
    agents = [agent("c", {"x"}), agent("a", {"x"}, pushable=False), agent("b", {"y"})]
    assert fanout_targets(required=["x"], candidates=agents) == ["a", "c"]


def test_an_agent_at_capacity_gets_nothing_more():
    agents = [agent("a", {"x"}, load=1, capacity=1), agent("b", {"x"}, load=3, capacity=4)]
    assert pick_agent(route="any", required=["x"], candidates=agents) == "b"
    full = [agent("a", {"x"}, load=1, capacity=1)]
    assert pick_agent(route="any", required=["x"], candidates=full) is None
    assert pick_agent(route="any", required=["x"], candidates=full, respect_capacity=False) == "a"
