import pytest

from mcs.backoff import retry_delay


@pytest.mark.parametrize(("attempts", "expected"), [(1, 10), (2, 20), (3, 40), (6, 320), (7, 600), (50, 600)])
def test_delay_doubles_from_the_base_and_is_capped(attempts, expected):
    assert retry_delay(attempts, base=10, cap=600) == expected


def test_fractions_and_huge_attempt_counts():
    assert retry_delay(2, base=0.05, cap=1) == pytest.approx(0.1)
    assert retry_delay(10_000, base=10, cap=600) == 600
    assert retry_delay(0, base=10, cap=600) == 0
