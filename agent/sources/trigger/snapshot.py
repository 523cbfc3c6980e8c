"""Snapshot reads for trigger capture (agent/snapshot.py has the method; docs/snapshots.md).

Watermarks go through the changelog itself: a row with op 'W' and `cdc-agent-watermark:<window>:<kind>` in
`tbl` (migrations 005 PostgreSQL, 004 MySQL, 003 SQLite and SQL Server), written on this reader's own
connection in a transaction of its own. The changelog reader orders it among the changes like any row, and
the source yields it as a Watermark, never as an event.

Neither changelog order is commit order everywhere: gap tracking emits in id order (a transaction that took a
lower id may commit after a higher one), PostgreSQL's windows in id order inside a window. A change that
took its id before the LOW watermark but commits after the chunk was read could then come before LOW, and
its key would not be dropped from the chunk. So this reader asks the runner to read a chunk only once the
stream has passed LOW (`read_after_low`): everything emitted before the read committed before it (it was
visible), and every change that commits after the read is emitted after LOW (a higher id; a later
PostgreSQL window; or a timed-out gap, emitted late), so between LOW and HIGH its key is dropped, and after
HIGH it follows the read row. HIGH may lie anywhere after the read.

Chunks: one keyset statement per chunk on a normal autocommit connection, selecting each row's image with
the trigger's own expression (`Dialect.snapshot_image`, and on PostgreSQL the capture function's session
settings), converted by a TriggerSource's converters: a read row equals a captured row of the same data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...errors import SourceError, SourceUnavailable
from ...snapshot import WATERMARK_PREFIX, SnapshotError
from .catalog import ConfiguredCapture, installed_version, load_table, split_table
from .changelog import ChangelogRow
from .db import Db, friendly, text_or_none
from .dialect import TableInfo
from .install import migrations
from .reader import TriggerSource

if TYPE_CHECKING:
    from ...config import Config

ALIAS = "cdc_snapshot_row"         # the table's alias in chunk queries (a name no column is likely to have)


def watermark_version(dialect: str) -> int:
    """The changelog version from which the reader knows watermark rows (the `*_watermarks` migration)."""
    return next((v for v, name, _ in migrations(dialect) if name == "watermarks"), 0)


class TriggerSnapshotReader:
    read_after_low = True          # read a chunk only once the stream has passed its LOW (module docstring)

    def __init__(self, cfg: Config, wrote: Callable[[], None] | None = None):
        self._wrote = wrote                     # tells the source a watermark is there to read
        cap = ConfiguredCapture(cfg)
        self.file, self.names, self.sql, self.dialect = cap.file, cap.names, cap.sql, cap.dialect
        self.db = Db(cap.target, "source database (snapshot)")
        try:
            self.sql.snapshot_session(self.db)
        except Exception as e:
            self.db.close()
            raise SourceUnavailable(f"snapshot connection: {friendly(e)}") from None
        self._rows = TriggerSource(cfg)         # the stream's converters (and table shapes), on this connection
        self._rows.db = self.db
        self._version = 0

    def close(self) -> None:
        self.db.close()

    def _error(self, e: Exception, what: str) -> SourceError | SnapshotError:
        """A statement failed: the request's fault (SnapshotError) while the connection works, else the
        database is gone (the pipeline reconnects and the chunk is read again)."""
        if isinstance(e, (SourceError, SnapshotError)):
            return e
        msg = friendly(e)
        try:
            self.db.query("SELECT 1")
        except Exception:
            return SourceUnavailable(f"{what}: {msg}")
        return SnapshotError(f"{what}: {msg}")

    # -------------------------------------------------------------- SnapshotReader

    def watermark(self, name: str, kind: str) -> None:
        need = watermark_version(self.dialect)
        try:
            if self._version < need:
                self._version = installed_version(self.db, self.names)
            if self._version < need:
                raise SnapshotError(f"trigger capture in the database is version {self._version:03d}; snapshot "
                                    f"watermarks need {need:03d}: run `cdc-agent setup -c {self.file}`")
            self.db.execute(self.sql.watermark_sql(self.names), {"mark": f"{WATERMARK_PREFIX}:{name}:{kind}"})
        except Exception as e:
            raise self._error(e, "cannot write a snapshot watermark into the changelog") from None
        if self._wrote is not None:
            self._wrote()

    def _info(self, table: str) -> TableInfo:
        try:
            info = load_table(self.db, table)
        except Exception as e:
            raise self._error(e, f"cannot read the columns of {table}") from None
        if info is None:
            raise SnapshotError(f"table {table} does not exist")
        return info

    def key_columns(self, table: str) -> tuple[str, ...]:
        return self._info(table).key

    def estimate(self, table: str) -> int | None:
        try:
            return self.sql.estimate_rows(self.db, table)
        except Exception:
            return None          # progress without a total, not a failed snapshot

    def _chunk_sql(self, info: TableInfo, keys: tuple[str, ...], after: list | None, where: str | None,
                   limit: int) -> tuple[str, bool]:
        sql = self.sql
        by_name = {c.name: c for c in info.columns}
        refs = [f"{ALIAS}.{sql.quote(k)}" for k in keys]
        image, texts = sql.snapshot_image(ALIAS, info)
        select = [sql.snapshot_key(r, by_name[k]) for r, k in zip(refs, keys)] + [image] + ([texts] if texts else [])
        lits = None if after is None else [sql.key_literal(_from_json(v)) for v in after]
        return (sql.chunk_sql(self.names.q(*split_table(info.name)), ALIAS, ", ".join(select), refs, lits, where,
                              limit), texts is not None)

    def validate(self, table: str, where: str | None) -> None:
        info = self._info(table)
        if not info.key:
            raise SnapshotError(f"table {table} has no primary key: a snapshot reads in key order; add one")
        try:
            self.db.query_text(self._chunk_sql(info, info.key, None, where, 0)[0])
        except Exception as e:
            err = self._error(e, "")
            if isinstance(err, SourceError):
                raise err from None
            raise SnapshotError(f"--where {where!r} fails on {table}: {friendly(e)}") from None

    def read_chunk(self, table: str, keys: tuple[str, ...], after: list | None, limit: int,
                   where: str | None) -> tuple[list[dict[str, Any]], list | None]:
        info = self._info(table)
        sql, has_texts = self._chunk_sql(info, keys, after, where, limit)
        try:
            rows = self.db.query_text(sql)
        except Exception as e:
            raise self._error(e, f"snapshot read of {table} failed") from None
        if not rows:
            return [], None
        n = len(keys)
        out = []
        for r in rows:
            texts = text_or_none(r[n + 1]) if has_texts else None
            change = self._rows.row_change(ChangelogRow("", table, "I", None, text_or_none(r[n]), None, 0.0, None,
                                                         None if texts is None else (None, texts)))
            out.append(change.after or {})
        return out, [_to_json(v) for v in rows[-1][:n]]


def _to_json(v: Any) -> Any:
    """A key value as the driver gives it -> what the spool's JSON keeps (the next chunk's condition)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"hex": bytes(v).hex()}
    if hasattr(v, "isoformat"):
        return v.isoformat(sep=" ") if hasattr(v, "hour") and hasattr(v, "date") else v.isoformat()
    return str(v)


def _from_json(v: Any) -> Any:
    return bytes.fromhex(v["hex"]) if isinstance(v, dict) else v
