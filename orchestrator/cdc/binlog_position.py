"""Where binlog capture stands: a MariaDB GTID state, or a binlog file and offset (MySQL without GTID).

Stored as JSON in the change-capture state hash (field `binlog`), in the same atomic write as the
jobs of the transactions it covers. Every change gets an id and an index version from the position
of its transaction and its row index inside it, so a replay makes the same ids and versions again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

# A row index gets this many bits of an index version: a transaction of more rows shares the top
# value for the rest (the newest of them still wins: ES keeps the first write of an equal version).
ROW_BITS = 20
_MAX_ROW = (1 << ROW_BITS) - 1
_GTID = re.compile(r"^\d+-\d+-\d+$")


@dataclass(frozen=True)
class TxnPosition:
    """One transaction's place in the binlog: its GTID (MariaDB) or the file and offset of its start."""

    gtid: str | None = None  # domain-server-seq
    file: str | None = None
    pos: int = 0

    def change_id(self, row: int) -> str:
        """The change id of row `row` of this transaction (no ':', which separates a job id's parts)."""
        if self.gtid is not None:
            return f"{self.gtid}.{row}"
        return f"{self.file}.{self.pos}.{row}"

    def version(self, row: int) -> int:
        """A number that grows with the binlog order (within one GTID domain): the index sink's
        external version. GTID: seq and row (20 bits); file:pos: the file's number, the offset (32 bits)
        and the row (12 bits)."""
        row = min(row, _MAX_ROW)
        if self.gtid is not None:
            seq = int(self.gtid.rsplit("-", 1)[1])
            return (seq << ROW_BITS) | row
        number = int((self.file or "0").rsplit(".", 1)[-1] or 0)
        return (number << 44) | ((self.pos & 0xFFFFFFFF) << 12) | min(row, 0xFFF)


@dataclass
class BinlogPosition:
    """After which transaction to resume.

    gtids: MariaDB's GTID state, one `domain-server-seq` per domain (what `@slave_connect_state` takes).
    file/pos: the binlog file and the offset after the last transaction delivered.
    """

    gtids: dict[int, str] = field(default_factory=dict)
    file: str | None = None
    pos: int = 0

    @property
    def empty(self) -> bool:
        return not self.gtids and self.file is None

    def gtid_state(self) -> str:
        return ",".join(self.gtids[d] for d in sorted(self.gtids))

    def advance(self, txn: TxnPosition, *, next_pos: int, next_file: str | None) -> None:
        """After `txn` was delivered (next_pos/next_file: where the binlog goes on after it)."""
        if txn.gtid is not None:
            self.gtids[int(txn.gtid.split("-", 1)[0])] = txn.gtid
        if next_file is not None:
            self.file, self.pos = next_file, next_pos

    def version(self) -> int:
        """An index version above every row of the transactions up to here, below any later one."""
        if self.gtids:
            return max(TxnPosition(gtid=g).version(_MAX_ROW) for g in self.gtids.values())
        if self.file is not None:
            return TxnPosition(file=self.file, pos=max(self.pos - 1, 0)).version(0xFFF)
        return 0

    def describe(self) -> str | None:
        if self.gtids:
            return self.gtid_state()
        if self.file is not None:
            return f"{self.file}:{self.pos}"
        return None

    def to_json(self) -> str:
        return json.dumps({"gtid": self.gtid_state() or None, "file": self.file, "pos": self.pos})

    @classmethod
    def from_json(cls, text: str | bytes | None) -> BinlogPosition:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(gtids=parse_gtid_state(data.get("gtid") or ""), file=data.get("file"), pos=int(data.get("pos") or 0))


def parse_gtid_state(text: str) -> dict[int, str]:
    """`0-1-5,1-2-9` (MariaDB's gtid_binlog_pos) -> {domain: gtid}."""
    out: dict[int, str] = {}
    for part in text.replace(" ", "").split(","):
        if _GTID.match(part):
            out[int(part.split("-", 1)[0])] = part
    return out
