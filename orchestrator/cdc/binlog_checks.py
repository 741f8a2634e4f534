"""What binlog capture needs from the server, checked before anything starts (and by `cdc status`).

Each missing setting or privilege is one line naming it and the statement that fixes it; binlog
capture starts only when there is none (nothing runs half configured).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from orchestrator.cdc.binlog_position import BinlogPosition, parse_gtid_state
from orchestrator.cdc.db import Connection, fetchall

_VARIABLES = (
    "SELECT @@global.log_bin, @@global.binlog_format, @@global.binlog_row_image, "
    "IFNULL(@@global.binlog_row_metadata, ''), @@global.server_id, VERSION(), CURRENT_USER()"
)


@dataclass
class ServerFacts:
    log_bin: bool
    binlog_format: str
    row_image: str
    row_metadata: str
    server_id: int
    version: str
    user: str  # 'name'@'host' as CURRENT_USER() says
    grants: list[str] = field(default_factory=list)

    @property
    def is_mariadb(self) -> bool:
        return "mariadb" in self.version.lower()


def problems(facts: ServerFacts, *, replica_id: int) -> list[str]:
    """One line per missing setting or privilege, each with the statement that fixes it."""
    out = []
    if not facts.log_bin:
        out.append(
            "log_bin is OFF: restart the server with --log-bin (and --server-id=N); it cannot be set at run time"
        )
    wanted = (
        ("binlog_format", facts.binlog_format, "ROW"),
        ("binlog_row_image", facts.row_image, "FULL"),
        ("binlog_row_metadata", facts.row_metadata, "FULL"),
    )
    for name, value, want in wanted:
        if value.upper() != want:
            out.append(
                f"{name} is {value or 'unset'}, needs {want}: SET GLOBAL {name} = '{want}' "
                f"(and {name.replace('_', '-')}={want} in the server's config)"
            )
    if facts.server_id == 0:
        out.append("server_id is 0 (binlog off for replicas): SET GLOBAL server_id = 1 (and server-id=1 in the config)")
    elif facts.server_id == replica_id:
        out.append(
            f"[cdc] binlog_server_id {replica_id} is the server's own server_id: set binlog_server_id to an id "
            "no server or replica uses"
        )
    needed = ["REPLICATION SLAVE", "BINLOG MONITOR" if facts.is_mariadb else "REPLICATION CLIENT"]
    held = " ".join(g.upper() for g in facts.grants)
    if not re.search(r"GRANT ALL PRIVILEGES ON \*\.\*|\bSUPER\b", held):
        for privilege in needed:
            alias = {"REPLICATION SLAVE": "REPLICA", "BINLOG MONITOR": "REPLICATION CLIENT"}.get(privilege)
            if privilege not in held and (alias is None or alias not in held):
                out.append(f"user {facts.user} lacks {privilege}: GRANT {privilege} ON *.* TO {facts.user}")
    return out


async def server_facts(conn: Connection) -> ServerFacts:
    ((log_bin, fmt, image, metadata, server_id, version, user),) = await fetchall(conn, _VARIABLES)
    name, _, host = str(user).rpartition("@")
    grants = [str(row[0]) for row in await fetchall(conn, "SHOW GRANTS FOR CURRENT_USER()")]
    return ServerFacts(
        bool(int(log_bin or 0)),
        str(fmt or ""),
        str(image or ""),
        str(metadata or ""),
        int(server_id or 0),
        str(version),
        f"'{name}'@'{host}'",
        grants,
    )


async def current_position(conn: Connection, facts: ServerFacts) -> BinlogPosition:
    """Where the binlog is now: where a rule with no stored position starts."""
    if facts.is_mariadb:
        ((gtid,),) = await fetchall(conn, "SELECT @@gtid_binlog_pos")
        return BinlogPosition(gtids=parse_gtid_state(str(gtid or "")))
    try:
        rows = await fetchall(conn, "SHOW BINARY LOG STATUS")
    except Exception:  # noqa: BLE001 - MySQL before 8.2 knows only the old name
        rows = await fetchall(conn, "SHOW MASTER STATUS")
    if not rows:
        return BinlogPosition()
    return BinlogPosition(file=str(rows[0][0]), pos=int(rows[0][1]))


def _seq(gtid: str) -> int:
    return int(gtid.rsplit("-", 1)[1])


async def is_purged(conn: Connection, position: BinlogPosition) -> bool:
    """Whether the server no longer has the binlog events after `position` (purged or expired)."""
    rows = await fetchall(conn, "SHOW BINARY LOGS")
    if not rows or position.empty:
        return False
    if not position.gtids:
        return position.file not in {str(r[0]) for r in rows}
    ((state,),) = await fetchall(conn, "SELECT BINLOG_GTID_POS(%s, 4)", (str(rows[0][0]),))
    oldest = parse_gtid_state(str(state or ""))  # the state just before the oldest file
    return any(d in position.gtids and _seq(position.gtids[d]) < _seq(g) for d, g in oldest.items())
