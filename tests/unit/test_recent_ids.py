"""The duplicate-invoke window: repeats inside it are refused, and it stays bounded."""

from __future__ import annotations

import pytest

from edgeclaw.node.recentids import RecentIds


def test_a_repeat_is_refused_and_a_new_id_is_not() -> None:
    seen = RecentIds(8)
    assert seen.add("a") and seen.add("b")
    assert not seen.add("a")
    assert not seen.add("b")
    assert seen.add("c")


def test_the_window_keeps_at_least_half_its_capacity_and_never_more_than_all_of_it() -> None:
    seen = RecentIds(100)
    for i in range(1000):
        assert seen.add(f"id-{i}")
        assert len(seen) <= 100
        # the newest 50 ids are always still remembered
        assert all(f"id-{i - back}" in seen for back in range(min(i + 1, 50)))
    assert "id-0" not in seen
    assert seen.add("id-0")  # long forgotten: served again, as a fresh invoke would be


def test_capacity_below_two_is_refused() -> None:
    with pytest.raises(ValueError):
        RecentIds(1)
