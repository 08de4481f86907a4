"""The per-caller submit rate: a token bucket on the api's event loop, with the clock passed in."""

from __future__ import annotations

import pytest

from mcs import quotas
from mcs.errors import QuotaExceeded


def test_token_bucket_refills_at_the_rate_and_stays_bounded():
    rate = quotas.SubmitRate(rate=2, burst=3, max_callers=100)
    for _ in range(3):
        rate.take("a", now=10.0)
    with pytest.raises(QuotaExceeded) as refused:
        rate.take("a", now=10.0)
    assert refused.value.retry_after == pytest.approx(0.5) and refused.value.code == "rate_limited"
    rate.take("b", now=10.0)  # another caller has its own bucket
    rate.take("a", now=10.5)  # half a second later: one more
    with pytest.raises(QuotaExceeded):
        rate.take("a", now=10.5)
    rate.give_back("a")
    rate.take("a", now=10.5)
    for i in range(1000):
        rate.take(f"caller-{i}", now=11.0)
    assert len(rate) == 100
    quotas.SubmitRate(rate=0, burst=0).take("a", now=0.0)  # 0 disables
