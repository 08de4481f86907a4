"""What an agent counts as left of a lease MCS started at assignment (claim_on_push): measured on the
server's clock alone (the webhook's signed timestamp against the lease's end), so a webhook retried late
gets its first extension sooner, and clock skew between agent and server does not matter."""

from __future__ import annotations

from mcs.agent.runner import MIN_EXTEND_INTERVAL, _pushed_lease_left


def test_a_late_webhook_leaves_less_of_the_lease():
    claimed = {"lease_expires_at": "2026-01-01T00:05:00Z", "claim_ttl": 300}
    sent_on_time = 1767225600.0  # 2026-01-01T00:00:00Z: as assigned
    assert _pushed_lease_left(claimed, sent_on_time) == 300.0
    assert _pushed_lease_left(claimed, sent_on_time + 250) == 50.0  # retried for 250 s before it got through


def test_a_webhook_sent_after_its_lease_ran_out_still_gets_an_interval_and_bad_input_none():
    claimed = {"lease_expires_at": "2026-01-01T00:05:00Z"}
    assert _pushed_lease_left(claimed, 1767225600.0 + 400) == MIN_EXTEND_INTERVAL
    assert _pushed_lease_left({}, 0.0) is None
    assert _pushed_lease_left({"lease_expires_at": "soon"}, 0.0) is None
