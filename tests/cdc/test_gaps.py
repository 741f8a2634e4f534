"""The gap-aware cursor's rules (the out-of-order commits themselves are in test_capture.py)."""

from __future__ import annotations

from pathlib import Path

from orchestrator.cdc.gaps import MAX_HOLES_PER_READ, TRX_CACHE_S, GapCursor, Hole, TrxInfo
from orchestrator.cdc.readers import ChangelogReader
from tests.cdc.helpers import cdc_settings, db_connect, install, sql


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


async def test_holes_beyond_the_ones_a_read_covers_are_not_closed_on_its_evidence(
    tmp_path: Path, redis_url: str, mysql_url: str
) -> None:
    settings = cdc_settings(tmp_path, redis_url, mysql_url, [{"name": "all", "table": "t", "plugins": ["recorder"]}])
    await sql(settings, "CREATE TABLE t (id INT PRIMARY KEY)")
    await install(settings)
    ids = list(range(1, 2 * (MAX_HOLES_PER_READ + 10), 2))  # every other id missing: more holes than a read takes
    cursor = GapCursor().advance(ids, seen_at=100.0)
    assert len(cursor.holes) > MAX_HOLES_PER_READ
    reader = ChangelogReader(f"{settings.mysql_params().db}.orch_changelog", read_size=5000)  # type: ignore[union-attr]
    conn = await db_connect(settings, autocommit=True)
    try:
        read = await reader.read(conn, cursor)
    finally:
        conn.close()
    assert not read.full and read.read_upto == cursor.holes[MAX_HOLES_PER_READ - 1].hi
    closed, n = cursor.close(TrxInfo(now=200.0, oldest_started=None), read_upto=read.read_upto, timeout_s=300)
    assert n == MAX_HOLES_PER_READ and len(closed.holes) == len(cursor.holes) - MAX_HOLES_PER_READ
