"""Snapshot reads for the PostgreSQL source (agent/snapshot.py has the method).

Watermarks are transactional logical messages, `pg_logical_emit_message(true, 'cdc-agent-watermark',
'<window>:low|high')`, each committed on its own: no signal table, nothing written to any table; the role
needs EXECUTE on the function (superuser, or `GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text,
text) TO <role>`), and the slot must get messages (pgoutput `messages`, PostgreSQL 14+).

Chunks are read on a normal connection with the stream's session settings (TimeZone=UTC, DateStyle...), in
text format, through the same converters as the stream (agent/pgvalues.py), so a read row and a streamed
row of the same data are equal. Each chunk is one autocommit statement: its locks (ACCESS SHARE) end with it.
"""

from __future__ import annotations

import psycopg
from psycopg import pq

from ... import pgvalues
from ...config import Config
from ...snapshot import WATERMARK_PREFIX, SnapshotError
from .common import conninfo, ident, table_ident, translate
from .stream import SESSION_OPTIONS


class PostgresSnapshotReader:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        try:
            self.conn = psycopg.connect(conninfo(self.cfg, extra_options=SESSION_OPTIONS), autocommit=True)
        except psycopg.Error as e:
            raise translate(e, "cannot connect for the snapshot") from None
        self._types: dict[int, pgvalues.TypeInfo] = {}
        self._columns: dict[str, list[str]] = {}
        self._converters: dict[str, list] = {}

    def close(self) -> None:
        self.conn.close()

    def _query(self, sql: str, params=None) -> list[tuple]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except psycopg.Error as e:
            raise translate(e, "snapshot query failed") from None

    def watermark(self, name: str, kind: str) -> None:
        self._query("SELECT pg_logical_emit_message(true, %s, %s)::text", (WATERMARK_PREFIX, f"{name}:{kind}"))

    def _oid(self, table: str) -> int | None:
        rows = self._query("SELECT to_regclass(%s)::oid::int8", (table_ident(table),))
        return rows[0][0] if rows else None

    def key_columns(self, table: str) -> tuple[str, ...]:
        oid = self._oid(table)
        if oid is None:
            raise SnapshotError(f"table {table} does not exist")
        rows = self._query(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s AND i.indisprimary "
            "ORDER BY array_position(i.indkey::int2[], a.attnum)", (oid,))
        return tuple(r[0] for r in rows)

    def _table_columns(self, table: str) -> list[str]:
        cols = self._columns.get(table)
        if cols is None:
            # the columns pgoutput sends: not dropped, not generated
            rows = self._query("SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
                               "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum", (table_ident(table),))
            cols = self._columns[table] = [r[0] for r in rows]
        return cols

    def estimate(self, table: str) -> int | None:
        rows = self._query("SELECT reltuples::int8 FROM pg_class WHERE oid = to_regclass(%s)", (table_ident(table),))
        return max(0, rows[0][0]) if rows and rows[0][0] is not None else None

    def _sql(self, table: str, keys: tuple[str, ...], after: bool, where: str | None, limit: int) -> str:
        cols = ", ".join(ident(c) for c in self._table_columns(table))
        keylist = ", ".join(ident(k) for k in keys)
        conds = []
        if after:
            params = ", ".join(f"${i}" for i in range(1, len(keys) + 1))
            conds.append(f"({keylist}) > ({params})")
        if where:
            conds.append(f"({where})")
        cond = (" WHERE " + " AND ".join(conds)) if conds else ""
        return f"SELECT {cols} FROM {table_ident(table)}{cond} ORDER BY {keylist} LIMIT {int(limit)}"

    def validate(self, table: str, where: str | None) -> None:
        keys = self.key_columns(table)
        if not keys:
            raise SnapshotError(f"table {table} has no primary key: a snapshot reads in key order; add one")
        res = self.conn.pgconn.exec_(self._sql(table, keys, False, where, 0).encode())
        if res.status != pq.ExecStatus.TUPLES_OK:
            msg = (res.error_message or b"").decode(errors="replace").strip().splitlines()
            raise SnapshotError(f"--where {where!r} fails on {table}: {msg[0] if msg else 'error'}")

    def read_chunk(self, table, keys, after, limit, where):
        sql = self._sql(table, keys, after is not None, where, limit).encode()
        params = [v.encode() for v in after] if after is not None else None
        pg = self.conn.pgconn
        res = pg.exec_params(sql, params, result_format=0) if params else pg.exec_(sql)
        if res.status != pq.ExecStatus.TUPLES_OK:
            msg = (res.error_message or b"").decode(errors="replace").strip()
            raise SnapshotError(f"snapshot read of {table} failed: {msg}")
        n, nf = res.ntuples, res.nfields
        if n == 0:
            return [], None
        names = [res.fname(j).decode() for j in range(nf)]
        conv = self._converters.get(table)
        oids = [res.ftype(j) for j in range(nf)]
        if conv is None or len(conv) != nf:
            self._load_types(oids)
            conv = self._converters[table] = pgvalues.converters(oids, self._types)
        key_at = [names.index(k) for k in keys]
        get = res.get_value
        # column by column: one converter per list comprehension, then the rows zipped from the columns;
        # half the interpreter work of filling each row's dict value by value
        cols = []
        for j in range(nf):
            c = conv[j]
            cols.append([None if v is None else c(v) for v in [get(i, j) for i in range(n)]])
        rows = [dict(zip(names, values)) for values in zip(*cols)]
        last = [get(n - 1, j).decode() for j in key_at]
        return rows, last

    def _load_types(self, oids: list[int]) -> None:
        missing = {o for o in oids if o not in pgvalues.SCALARS and o not in self._types}
        for _ in range(10):
            if not missing:
                return
            rows = self._query(
                "SELECT oid::int8, typname::text, typtype::text, typcategory::text, typelem::int8, "
                "typbasetype::int8, typdelim::text FROM pg_type WHERE oid = ANY(%s::oid[])", (sorted(missing),))
            nxt: set[int] = set()
            for oid, name, typtype, cat, elem, base, delim in rows:
                self._types[oid] = pgvalues.TypeInfo(oid, name, typtype, cat, elem, base, delim)
                nxt.update(x for x in (elem, base) if x)
            for o in missing - {r[0] for r in rows}:
                self._types[o] = pgvalues.TypeInfo(o)
            missing = {o for o in nxt if o not in pgvalues.SCALARS and o not in self._types}
