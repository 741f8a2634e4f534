"""The gap-aware cursor over the changelog's id sequence.

An AUTO_INCREMENT id is taken when a row is inserted, not when its transaction commits. So id 11
can be visible while id 10 is not yet: its transaction is still open, and a plain `id > watermark`
poller that moved to 11 never reads 10 (measured here: 306 of 2,881 committed rows missed with 4
writers and 10% rollbacks). Ids also go missing for good: a rolled-back insert burns its id.

So the cursor remembers the *holes* (ids below the highest id read that were not there) and reads
them again every poll. A hole is closed (given up) only once no transaction that could still
commit it is open: every transaction that took an id in the hole started before the poll that
first saw the hole missing, so once `information_schema.INNODB_TRX` shows no open transaction
that old, the ids in the hole are either visible now (and this round read them) or never will be.
Without the PROCESS privilege (no INNODB_TRX), a hole is given up after `hole_timeout_s`, which
must be longer than the longest transaction.

The persisted position is `high` (the largest id read) plus the open holes; the low watermark
(`low`, everything at or below it is delivered or closed) is what status shows and what trimming
may delete up to.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

# A hole list longer than this is re-read in parts: a query with thousands of ranges gets slow.
MAX_HOLES_PER_READ = 500
# InnoDB serves INNODB_TRX from a cache refreshed at most every 100 ms (CACHE_MIN_REFRESH_TIME in
# trx0i_s.cc): what it shows may be that old. A hole is judged only by a snapshot taken after it was
# seen, so it must have been seen at least this long before the query.
TRX_CACHE_S = 0.5


@dataclass(frozen=True)
class Hole:
    """Ids `lo..hi` (inclusive) not seen yet; `seen_at` is the DB clock (epoch s) of the read that
    first found them missing, taken while that read ran (so it is no earlier than the read)."""

    lo: int
    hi: int
    seen_at: float


@dataclass(frozen=True)
class TrxInfo:
    """What the DB said just before a read.

    Args:
        now: the DB clock (epoch s).
        oldest_started: the start (whole seconds, as INNODB_TRX has it) of the oldest open
            transaction other than ours; None when none is open.
        visible: False when INNODB_TRX cannot be read (no PROCESS privilege).
    """

    now: float
    oldest_started: float | None
    visible: bool = True


@dataclass(frozen=True)
class GapCursor:
    high: int = 0
    holes: tuple[Hole, ...] = field(default_factory=tuple)

    @property
    def low(self) -> int:
        """Every id at or below this one is delivered or closed."""
        return self.holes[0].lo - 1 if self.holes else self.high

    def read_ranges(self) -> tuple[Hole, ...]:
        """The holes the next read includes (the oldest first)."""
        return self.holes[:MAX_HOLES_PER_READ]

    def advance(self, ids: Iterable[int], seen_at: float) -> GapCursor:
        """The cursor after delivering `ids` (ascending) of a read whose DB time was `seen_at`."""
        high = self.high
        holes = list(self.holes)
        for change_id in ids:
            if change_id > high:
                if change_id > high + 1:
                    holes.append(Hole(high + 1, change_id - 1, seen_at))
                high = change_id
                continue
            holes = _fill(holes, change_id)
        return GapCursor(high, tuple(holes))

    def close(self, info: TrxInfo, *, read_upto: int, timeout_s: float) -> tuple[GapCursor, int]:
        """Give up the holes that can no longer be filled. Returns (cursor, ids given up).

        Only holes that were seen before `info` was taken (`seen_at < info.now`, with a margin for
        InnoDB's cache of INNODB_TRX) and that the read
        after it fully covered (`hi <= read_upto`) qualify: their allocating transactions started
        no later than `seen_at`, so if none that old is open at `info.now`, each one either
        committed before the read (and the read found its id) or rolled back.
        """
        kept: list[Hole] = []
        closed = 0
        for hole in self.holes:
            eligible = hole.seen_at < info.now - TRX_CACHE_S and hole.hi <= read_upto
            if info.visible:
                gone = info.oldest_started is None or info.oldest_started > hole.seen_at
            else:
                gone = info.now - hole.seen_at > timeout_s
            if eligible and gone:
                closed += hole.hi - hole.lo + 1
            else:
                kept.append(hole)
        return replace(self, holes=tuple(kept)), closed

    # -- persistence --
    def to_json(self) -> str:
        return json.dumps({"high": self.high, "holes": [[h.lo, h.hi, h.seen_at] for h in self.holes]})

    @classmethod
    def from_json(cls, text: str | bytes | None) -> GapCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(int(data["high"]), tuple(Hole(int(a), int(b), float(t)) for a, b, t in data.get("holes", [])))

    def describe(self) -> dict[str, int]:
        return {"low": self.low, "high": self.high, "holes": sum(h.hi - h.lo + 1 for h in self.holes)}


def _fill(holes: list[Hole], change_id: int) -> list[Hole]:
    """Remove one id from the hole that holds it (a late commit arrived)."""
    for i, hole in enumerate(holes):
        if hole.lo <= change_id <= hole.hi:
            parts = [Hole(hole.lo, change_id - 1, hole.seen_at), Hole(change_id + 1, hole.hi, hole.seen_at)]
            return holes[:i] + [p for p in parts if p.lo <= p.hi] + holes[i + 1 :]
    return holes  # read twice (a replayed round): already delivered
