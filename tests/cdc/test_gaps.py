"""The gap-aware cursor's rules, without a database (the real-DB cases are in test_capture.py)."""

from __future__ import annotations

from orchestrator.cdc.gaps import TRX_CACHE_S, GapCursor, Hole, TrxInfo


def test_ids_skipped_become_holes_and_late_ids_fill_them() -> None:
    cursor = GapCursor().advance([1, 2, 5, 6, 9], seen_at=100.0)
    assert cursor.high == 9 and cursor.low == 2
    assert cursor.holes == (Hole(3, 4, 100.0), Hole(7, 8, 100.0))
    cursor = cursor.advance([4, 7], seen_at=101.0)
    assert cursor.holes == (Hole(3, 3, 100.0), Hole(8, 8, 100.0))
    cursor = cursor.advance([3, 8], seen_at=102.0)
    assert not cursor.holes and cursor.low == 9
    assert cursor.advance([4], seen_at=103.0) == cursor  # a replayed id changes nothing


def test_a_hole_closes_only_when_no_transaction_as_old_as_it_is_open() -> None:
    cursor = GapCursor().advance([1, 3], seen_at=100.0)
    later = 100.0 + TRX_CACHE_S + 1
    still_open = TrxInfo(now=later, oldest_started=100.0)  # started (floored) no later than the hole was seen
    assert cursor.close(still_open, read_upto=10**9, timeout_s=300)[0] == cursor
    younger_only = TrxInfo(now=later, oldest_started=101.0)
    closed, n = cursor.close(younger_only, read_upto=10**9, timeout_s=300)
    assert n == 1 and not closed.holes and closed.low == 3
    assert cursor.close(TrxInfo(now=later, oldest_started=None), read_upto=10**9, timeout_s=300)[1] == 1


def test_a_hole_is_not_closed_by_a_snapshot_that_may_predate_it_or_a_read_that_did_not_cover_it() -> None:
    cursor = GapCursor().advance([1, 3], seen_at=100.0)
    too_soon = TrxInfo(now=100.0 + TRX_CACHE_S / 2, oldest_started=None)  # InnoDB's INNODB_TRX cache
    assert cursor.close(too_soon, read_upto=10**9, timeout_s=300)[1] == 0
    later = TrxInfo(now=200.0, oldest_started=None)
    assert cursor.close(later, read_upto=1, timeout_s=300)[1] == 0  # the read stopped below the hole


def test_without_the_process_privilege_holes_close_after_the_timeout() -> None:
    cursor = GapCursor().advance([1, 3], seen_at=100.0)
    assert cursor.close(TrxInfo(now=200.0, oldest_started=None, visible=False), read_upto=9, timeout_s=300)[1] == 0
    assert cursor.close(TrxInfo(now=401.0, oldest_started=None, visible=False), read_upto=9, timeout_s=300)[1] == 1


def test_the_position_survives_a_round_trip_through_json() -> None:
    cursor = GapCursor().advance([1, 4, 9], seen_at=100.5)
    assert GapCursor.from_json(cursor.to_json()) == cursor
    assert GapCursor.from_json(None) == GapCursor()
