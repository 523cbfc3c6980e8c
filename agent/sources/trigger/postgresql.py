"""PostgreSQL: one generic trigger function (statement triggers with transition tables since version 4, one
changelog row per statement; row triggers before), and the changelog read in snapshot windows.

Never missing a change (a transaction that took a lower changelog id may commit after a higher id was read):
every row records its transaction (txid_current()). The reader takes snapshots (txid_current_snapshot()) and
reads, window by window, exactly the rows whose transaction is visible in the window's upper snapshot and
not in its lower one (as PgQ does). Every committed transaction becomes visible in exactly one window, so
none is skipped and none read twice; windows follow commit order. The window bounds travel in the
checkpoint, so a replay after a crash re-reads the same windows and gives the same positions (and event ids).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from ...changes import CheckItem
from ...errors import SourceFatal
from ...myvalues import float32_shortest
from ...pgvalues import (array_converter, bytea_to_base64, date_text, frac6, interval_text_to_iso,
                         timestamp_text, timestamptz_text, timetz_text)
from ...rawjson import raw_json
from .catalog import short, split_table
from .changelog import ChangelogRead, ChangelogReader, ChangelogRow
from .db import Db, text_of, truthy
from .dialect import Column, Dialect, TableInfo
from .statements import unpack
from .values import array_of, float_value, numeric

if TYPE_CHECKING:
    from .catalog import Names
    from .dsn import Target

PG_EMPTY_SNAPSHOT = "1:1:"          # nothing is visible in it: the lower bound of the very first window


def _text_int(v: Any) -> Any:
    return int(v) if type(v) is str else v          # oid, xid, xid8, cid: to_json writes them as strings


def _float4(v: Any) -> Any:
    # the shortest decimal of the 32-bit value, whatever extra_float_digits the row was written with
    return v if type(v) is str else float32_shortest(float(v))


def _str_of(fn: Callable[[str], str]) -> Callable[[Any], Any]:
    return lambda v: fn(v) if type(v) is str else v


def _json_span(span: str) -> Any:
    r = raw_json(span)
    return r if r is not None else span


# the reader hands it the value's exact text (mypy does not model attributes set on a function)
_json_span.from_span = True          # type: ignore[attr-defined]

def _timestamp_json(v: Any) -> Any:
    """timestamp as to_json writes it ('2026-12-02T06:11:42.123456', or without a fraction) is already the
    contract form: returned as it is, without timestamp_text's parse (which gives the same text for it)."""
    if type(v) is not str:
        return v
    n = len(v)
    if v[10:11] == "T" and (n == 19 or (n == 26 and v[19] == "." and v[20:] != "000000")) and v.isascii():
        return v
    return timestamp_text(v)


def _timestamptz_json(v: Any) -> Any:
    """timestamptz as to_json writes it in UTC ('...T06:11:42.123456+00:00', the function with its own
    settings): the contract form is its first 26 characters and 'Z'; other offsets and forms are parsed."""
    if type(v) is not str:
        return v
    if len(v) == 32 and v[26:] == "+00:00" and v[10] == "T" and v[19] == "." and v[4] == "-" and \
            (v[:4] + v[5:7] + v[8:10] + v[11:13] + v[14:16] + v[17:19] + v[20:26]).isdecimal() and v.isascii():
        return v[:26] + "Z"
    return timestamptz_text(v)


# Values as to_json() writes them inside the capture function, whose settings are fixed (TimeZone UTC,
# DateStyle ISO, IntervalStyle iso_8601, extra_float_digits 1, bytea_output hex; migration 003), and as
# older versions wrote them under the writer's settings: the pgvalues functions take both.
_PG_CONV: dict[str, Callable] = {
    "numeric": numeric, "float4": _float4, "float8": float_value,
    "oid": _text_int, "xid": _text_int, "xid8": _text_int, "cid": _text_int,
    "date": _str_of(date_text), "timestamp": _timestamp_json, "timestamptz": _timestamptz_json,
    "time": _str_of(frac6), "timetz": _str_of(timetz_text), "interval": _str_of(interval_text_to_iso),
    "bytea": lambda v: bytea_to_base64(v.encode()),
}

# pg_type rows of the columns' types, and of what they are made of (domains, array elements)
_TYPES_SQL = (
    "SELECT t.oid::int8, t.typname::text, t.typtype::text, t.typcategory::text, t.typelem::int8, "
    "  t.typbasetype::int8, EXISTS (SELECT 1 FROM pg_catalog.pg_cast k WHERE k.castsource = t.oid "
    "    AND k.casttarget = 'pg_catalog.json'::pg_catalog.regtype) AND t.oid >= 16384 "
    "FROM pg_catalog.pg_type t WHERE t.oid = ANY (CAST(:oids AS int8[]))")


# Base types whose to_json form does not depend on the session's settings (DateStyle, TimeZone: to_json
# writes date, timestamp and timestamptz in ISO form with the UTC offset, which the converters read;
# extra_float_digits, IntervalStyle, bytea_output and the output functions of ranges, composites, money,
# geometry, ... do): a table of only these is captured by the function without the SET clause (004).
_SETTINGS_FREE = frozenset((
    "bool", "int2", "int4", "int8", "numeric", "text", "varchar", "bpchar", "char", "name", "uuid", "json",
    "jsonb", "date", "timestamp", "timestamptz", "oid", "xid", "xid8", "cid", "inet", "cidr", "macaddr",
    "macaddr8", "bit", "varbit"))


def _settings_free(col: Column) -> bool:
    return not col.text_form and (col.elem or col.type) in _SETTINGS_FREE


def _resolve(db: Db, oids: set[int]) -> dict[int, tuple]:
    types: dict[int, tuple] = {}
    want = set(oids)
    for _ in range(12):                     # domain and array chains are short; do not loop for ever
        want -= set(types)
        if not want:
            break
        for r in db.query(_TYPES_SQL, {"oids": "{" + ",".join(str(o) for o in sorted(want)) + "}"}):
            types[int(r[0])] = (text_of(r[1]), text_of(r[2]), text_of(r[3]), int(r[4]), int(r[5]), truthy(r[6]))
        want = {x for t in types.values() for x in (t[3], t[4]) if x} - set(types)
    return types


def _base(types: dict[int, tuple], oid: int) -> int:
    for _ in range(12):
        t = types.get(oid)
        if t is None or t[1] != "d" or not t[4]:
            return oid
        oid = t[4]
    return oid


class PostgresqlDialect(Dialect):
    name = "postgresql"
    name_limit = 63
    # one function for every table (to_json(NEW) follows column changes by itself); the trigger names the
    # columns whose text form it also writes (composites, hstore), so triggers are compared per table

    def connect_args(self, target: Target) -> dict[str, Any]:
        return {"connect_timeout": 10}

    def now_sql(self) -> str:
        return "now()"

    # -------------------------------------------------------------- catalog

    def load_table(self, db: Db, table: str) -> TableInfo | None:
        schema, name = split_table(table)
        rows = db.query(
            "SELECT a.attname, a.atttypid::int8, a.attnum "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "WHERE n.nspname = :s AND c.relname = :t AND c.relkind IN ('r', 'p') ORDER BY a.attnum",
            {"s": schema, "t": name})
        if not rows:
            return None
        types = _resolve(db, {int(r[1]) for r in rows})
        cols = []
        for r in rows:
            oid = _base(types, int(r[1]))
            typ = types.get(oid, ("", "b", "", 0, 0, False))
            elem = None
            scalar = typ
            if typ[2] == "A" and typ[3]:
                eoid = _base(types, typ[3])
                scalar = types.get(eoid, ("", "b", "", 0, 0, False))
                elem = scalar[0]
            # to_json() writes composites (and types with a cast to json, such as hstore) as objects; the
            # log source has their text form, so the trigger writes that text too
            text_form = scalar[1] == "c" or scalar[5]
            cols.append(Column(text_of(r[0]), typ[0], elem, text_form=text_form))
        pk = db.query("SELECT i.indkey::text FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
                      "JOIN pg_namespace n ON n.oid = c.relnamespace "
                      "WHERE n.nspname = :s AND c.relname = :t AND i.indisprimary", {"s": schema, "t": name})
        by_num = {int(r[2]): text_of(r[0]) for r in rows}
        key = tuple(by_num[int(k)] for k in text_of(pk[0][0]).split() if int(k) in by_num) if pk else ()
        return TableInfo(table, cols, key)

    def table_exists(self, db: Db, schema: str, name: str) -> bool:
        return bool(db.query("SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                             "WHERE n.nspname = :s AND c.relname = :t", {"s": schema, "t": name}))

    def installed_triggers(self, db: Db, names: Names) -> dict[tuple[str, str], str]:
        out: dict[tuple[str, str], str] = {}
        for s, t, name, ddl in db.query(
                "SELECT n.nspname, c.relname, tg.tgname, pg_get_triggerdef(tg.oid) FROM pg_trigger tg "
                "JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                "JOIN pg_proc p ON p.oid = tg.tgfoid JOIN pg_namespace pn ON pn.oid = p.pronamespace "
                "WHERE NOT tg.tgisinternal AND p.proname IN (:fn, :fn2) AND pn.nspname = :s",
                {"fn": names.fn, "fn2": names.fn_plain, "s": names.schema}):
            out[(f"{s}.{t}", name)] = ddl
        return out

    def server_version(self, db: Db) -> str:
        return text_of(db.query("SHOW server_version")[0][0])

    # -------------------------------------------------------------- rendering

    def table_values(self, names: Names, info: TableInfo) -> dict[str, str]:
        # version 4: three statement triggers per table (one per event: a trigger with transition tables
        # serves one); up to version 3 one row trigger named like the function. Their arguments name the
        # text-form columns.
        v = {f"trigger_{s}": self.quote(n) for s, n in zip("iud", self._statement_triggers(names))}
        v["trigger"] = self.quote(names.fn)
        plain = all(_settings_free(c) for c in info.columns)
        v["capture_fn"] = names.q(names.schema, names.fn_plain if plain else names.fn)
        v["text_columns"] = ", ".join(self.literal(c.name) for c in info.columns if c.text_form)
        return v

    def trigger_names(self, names: Names, table: str) -> list[str]:
        return [names.fn] if names.row_triggers else self._statement_triggers(names)

    def _statement_triggers(self, names: Names) -> list[str]:
        return [short(f"{names.fn}_{s}", self.name_limit) for s in "iud"]

    def template_suffix(self, names: Names) -> str:
        return ".row" if names.row_triggers else ""

    def replace_triggers(self, db: Db, names: Names, info: TableInfo, rendered: list[str],
                         current: dict[str, str | None]) -> list[str]:
        # the triggers of the other level go too (the row trigger of versions 1 to 3, or after a change of
        # trigger_level), in the same transaction: no statement is captured twice or missed. They are named
        # after the function, so this finds only ours.
        drops = [self.drop_trigger_sql(names, info.name, n) for n, body in current.items() if body]
        drops += [self.drop_trigger_sql(names, info.name, n) for n in [names.fn] + self._statement_triggers(names)
                  if n not in current]
        return drops + rendered

    def trigger_body(self, stmt: str) -> str:
        """What tells two of our triggers apart: the function and its arguments (pg_get_triggerdef spells the
        rest its own way)."""
        m = re.search(r"(?is)\bEXECUTE\s+(?:FUNCTION|PROCEDURE)\s+([^(]*)\((.*)\)\s*$", stmt)
        if not m:
            return stmt
        fn = m.group(1).strip().rsplit(".", 1)[-1].strip('"')
        return f"{fn} args " + repr(re.findall(r"'((?:[^']|'')*)'", m.group(2)))

    def drop_trigger_sql(self, names: Names, table: str, trigger: str) -> str:
        return f"DROP TRIGGER IF EXISTS {self.quote(trigger)} ON {names.q(*split_table(table))}"

    # -------------------------------------------------------------- check

    def privileges(self, db: Db, names: Names, tables: tuple[str, ...], target: Target,
                   installed: int) -> list[CheckItem]:
        missing: list[str] = []
        for table in tables:
            s, t = split_table(table)
            r = db.query("SELECT has_table_privilege(c.oid, 'TRIGGER') FROM pg_class c JOIN pg_namespace n "
                         "ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relname = :t", {"s": s, "t": t})
            if r and not truthy(r[0][0]):
                missing.append(f"TRIGGER on {table}")
        if not installed:
            r = db.query("SELECT has_schema_privilege(:s, 'CREATE')", {"s": names.schema})
            if r and not truthy(r[0][0]):
                missing.append(f"CREATE on schema {names.schema}")
        else:
            r = db.query("SELECT has_table_privilege(:t, 'SELECT,DELETE')",
                         {"t": f"{self.quote(names.schema)}.{self.quote(names.cl)}"})
            if r and not truthy(r[0][0]):
                missing.append(f"SELECT, DELETE on {names.schema}.{names.cl}")
        fix = "\n".join(f"GRANT {m.replace(' on schema ', ' ON SCHEMA ').replace(' on ', ' ON ')} "
                        f"TO <agent user>;" for m in missing)
        return [CheckItem("privileges", not missing, "TRIGGER on the tables, CREATE in the schema "
                          "(or own them)" if not missing else "missing: " + ", ".join(missing),
                          fix + "\n(or run `cdc-agent setup` once as the tables' owner)" if missing else "")]

    def server_checks(self, db: Db) -> list[CheckItem]:
        on = text_of(db.query("SELECT current_setting('track_commit_timestamp')")[0][0]) == "on"
        return [CheckItem("commit time", on, "track_commit_timestamp = on: events carry the commit time"
                          if on else "track_commit_timestamp = off: events carry the time of the change "
                          "inside its transaction, not its commit time",
                          "ALTER SYSTEM SET track_commit_timestamp = on; then restart PostgreSQL",
                          warning=True)]

    # -------------------------------------------------------------- values and the changelog

    def converter(self, col: Column) -> Callable[[Any], Any] | None:
        if col.text_form:
            return _json_span           # written without its text (an older trigger): as to_json wrote it
        if col.elem:
            if col.elem in ("json", "jsonb"):
                return _json_span
            fn = _PG_CONV.get(col.elem)
            return array_of(fn) if fn else None     # strings as to_json wrote them
        if col.type in ("json", "jsonb"):
            return _json_span
        fn = _PG_CONV.get(col.type)
        if fn:
            return fn
        return None                     # text, enums, ranges, inet, ...: strings as to_json wrote them

    def text_converter(self, col: Column) -> Callable[[str], Any] | None:
        if not col.text_form:
            return None
        if col.elem:
            arr = array_converter(bytes.decode)
            return lambda s: arr(s.encode())
        return str

    def changelog(self, names: Names, max_wait: float) -> ChangelogReader:
        return WindowReader(names)

    # -------------------------------------------------------------- snapshots (snapshot.py)

    def watermark_sql(self, names: Names) -> str:
        return f"SELECT {names.qwm}(:mark)::text"          # version 005: EXECUTE on it, not INSERT

    def watermark_check(self, db: Db, names: Names, installed: int) -> CheckItem:
        fn = f"{names.schema}.{names.wm}(text)"
        if installed < 5:
            return CheckItem("snapshot watermarks", True, f"function {fn} comes with `cdc-agent setup` (version 005)")
        r = db.query("SELECT has_function_privilege(CAST(:f AS regprocedure), 'EXECUTE')",
                     {"f": f"{self.quote(names.schema)}.{self.quote(names.wm)}(text)"})
        ok = bool(r) and truthy(r[0][0])
        return CheckItem("snapshot watermarks", ok, f"EXECUTE on {fn}" if ok else f"no EXECUTE on {fn}: "
                         "snapshots cannot write their watermarks", f"GRANT EXECUTE ON FUNCTION {fn} TO <agent user>;"
                         "\n(or set source.snapshot = \"never\")" if not ok else "")

    def snapshot_session(self, db: Db) -> None:
        # the capture function's own settings (migration 003): to_json() then writes what the trigger writes
        for setting in ("TimeZone = 'UTC'", "DateStyle = 'ISO, YMD'", "IntervalStyle = 'iso_8601'",
                        "extra_float_digits = 1", "bytea_output = 'hex'"):
            db.script(f"SET {setting}")

    def snapshot_image(self, alias: str, info: TableInfo) -> tuple[str, str | None]:
        texts = [c.name for c in info.columns if c.text_form]
        text_sql = None
        if texts:
            names = ", ".join(self.literal(c) for c in texts)
            values = ", ".join(f"{alias}.{self.quote(c)}::text" for c in texts)
            text_sql = f"pg_catalog.json_object(ARRAY[{names}]::text[], ARRAY[{values}]::text[])::text"
        return f"pg_catalog.to_json({alias}.*)::text", text_sql

    def snapshot_key(self, ref: str, col: Column) -> str:
        return f"{ref}::text"            # back as an unknown-typed literal, which takes the column's type

    def estimate_rows(self, db: Db, table: str) -> int | None:
        rows = db.query("SELECT c.reltuples::int8 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = :s AND c.relname = :t", dict(zip(("s", "t"), split_table(table))))
        return int(rows[0][0]) if rows and rows[0][0] is not None and rows[0][0] >= 0 else None


class WindowReader(ChangelogReader):
    """Snapshot windows (module docstring). Checkpoints: "c/<window>/<upper snapshot>" after a whole window,
    "o/<window>/<last id>/<lower>/<upper>" inside one (a big window is read in pieces)."""

    def __init__(self, names: Names):
        self.names = names
        self.version = 0
        self._commit_ts = False             # track_commit_timestamp is on: rows carry their commit time
        self._win_t = 0
        self._base = PG_EMPTY_SNAPSHOT       # upper snapshot of the last finished window
        self._lo: str | None = None          # open window: (lo, hi], last id read
        self._hi: str | None = None
        self._last = 0
        self._deleted: str | None = None    # a snapshot whose every visible row is deleted (this session)

    def start(self, db: Db, version: int, checkpoint: str | None) -> None:
        self._db, self.version = db, version
        self._commit_ts = text_of(db.query("SELECT current_setting('track_commit_timestamp')")[0][0]) == "on"
        self._deleted = None
        self._win_t, self._base, self._lo, self._hi, self._last = 0, PG_EMPTY_SNAPSHOT, None, None, 0
        if checkpoint:
            p = checkpoint.split("/")
            try:
                if p[0] == "c" and len(p) == 3:
                    self._win_t, self._base = int(p[1]), p[2]
                elif p[0] == "o" and len(p) == 5:
                    self._win_t, self._last, self._lo, self._hi = int(p[1]), int(p[2]), p[3], p[4]
                    self._base = self._lo
                else:
                    raise ValueError
            except ValueError:
                raise SourceFatal(f"checkpoint {checkpoint!r} is not a trigger-capture checkpoint for "
                                  "PostgreSQL (was the source kind changed? reset the agent's state_dir)") from None
            # the spool holds everything up to the checkpoint, but the agent may have died before deleting
            # it; windows already passed are never read again, so delete now or those rows stay forever
            self.confirm(checkpoint)

    def _select(self) -> str:
        """The window's next rows in id order, at most :n of them and, counting a statement row (version 4)
        as its rows, only as many as hold :n changes (at least one row); `hn`: how many rows the window had
        left (up to :n), to tell whether it is exhausted."""
        cts = ("EXTRACT(EPOCH FROM pg_xact_commit_timestamp(((txid % 4294967296)::text)::xid))::float8"
               if self._commit_ts else "NULL::float8")
        origin = "origin" if self.version >= 2 else "NULL::text"
        texts = "before_texts::text, after_texts::text" if self.version >= 3 else "NULL::text, NULL::text"
        nrows, k = ("nrows", "COALESCE(c.nrows, 1)") if self.version >= 4 else ("NULL::int4", "1")
        return (f"SELECT id, txid, tbl, op, before::text, after::text, {origin}, "
                f"EXTRACT(EPOCH FROM created)::float8, {cts}, {texts}, {nrows}, hn FROM ("
                f"  SELECT h.*, sum(h.k_) OVER (ORDER BY h.id) - h.k_ AS ahead_, count(*) OVER () AS hn FROM ("
                f"    SELECT c.*, {k} AS k_ FROM {self.names.qcl} c "
                "     WHERE txid >= txid_snapshot_xmin(CAST(:lo AS txid_snapshot)) "
                "       AND txid < txid_snapshot_xmax(CAST(:hi AS txid_snapshot)) "
                "       AND txid_visible_in_snapshot(txid, CAST(:hi AS txid_snapshot)) "
                "       AND NOT txid_visible_in_snapshot(txid, CAST(:lo AS txid_snapshot)) "
                "       AND id > :last ORDER BY id LIMIT :n) h) w "
                "WHERE ahead_ < :n ORDER BY id")

    def read(self, n: int) -> ChangelogRead:
        db, cl = self.db, self.names.qcl
        if self._hi is None:
            # open the next window: (base, now]. Only when it holds something, so an idle database
            # does not advance windows (and positions) for nothing.
            snap, has = db.query(
                "WITH s AS (SELECT txid_current_snapshot() AS snap) "
                f"SELECT snap::text, EXISTS (SELECT 1 FROM {cl} WHERE "
                "  txid >= txid_snapshot_xmin(CAST(:base AS txid_snapshot)) AND txid < txid_snapshot_xmax(snap) "
                "  AND txid_visible_in_snapshot(txid, snap) "
                "  AND NOT txid_visible_in_snapshot(txid, CAST(:base AS txid_snapshot))) FROM s",
                {"base": self._base})[0]
            if not truthy(has):
                return ChangelogRead()
            self._lo, self._hi, self._last = self._base, text_of(snap), 0
            self._win_t += 1
        if self._last:
            # The next piece of a window cut at n: walk the id index from the last id read and stop after n
            # rows. Left to itself, without statistics on the changelog (a new one, or one grown since
            # autovacuum's last ANALYZE), the planner scans the whole rest of the window on the txid index
            # and sorts it, for every piece: a backlog read in pieces cost the square of its size. (A window's
            # first piece keeps the planner's choice: the txid index finds a small window without walking
            # the id index over the deleted rows vacuum has not yet removed.)
            db.query("SELECT set_config('enable_bitmapscan', 'off', false), set_config('enable_sort', 'off', false)")
            try:
                rows = db.query(self._select(), {"lo": self._lo, "hi": self._hi, "last": self._last, "n": n})
            finally:
                db.script("RESET enable_bitmapscan")
                db.script("RESET enable_sort")
        else:
            rows = db.query(self._select(), {"lo": self._lo, "hi": self._hi, "last": 0, "n": n})
        wt = self._win_t
        out: list[ChangelogRow] = []
        for rid, txid, tbl, op, before, after, origin, created, cts, bt, at, nrows, _ in rows:
            pos = f"{wt:016x}:{rid:016x}"
            when = cts if cts is not None else created
            if nrows is None:           # the row form (versions 1 to 3, or a row trigger)
                out.append(ChangelogRow(pos, tbl, op, before, after, origin, when, str(txid),
                                        (bt, at) if bt is not None or at is not None else None))
            else:                       # a statement row (version 4): one change per row, numbered in it
                key = self.keys(tbl) if self.keys else ()
                out.extend(ChangelogRow(f"{pos}:{k:04x}", tbl, o, b, a, origin, when, str(txid), t)
                           for k, (o, b, a, t) in enumerate(unpack(op, before, after, bt, at, key)))
        exhausted = not rows or (len(rows) == int(rows[0][-1]) and len(rows) < n)
        if rows:
            self._last = rows[-1][0]
        if exhausted:
            # the window is exhausted: its upper snapshot is the next window's lower bound
            self._base, self._lo, self._hi = self._hi, None, None
            checkpoint = f"c/{wt}/{self._base}"
        else:
            checkpoint = f"o/{wt}/{self._last}/{self._lo}/{self._hi}"
        # Read on at once while behind: the window was cut at n, or this read was a full batch (what committed
        # while it ran is likely as much). A window exhausted by a short read means caught up: the next read
        # waits for the poll interval, so a steady write stream is read in batches of one interval's commits,
        # not in a window per few commits (each with its queries, spool commit and delete).
        more = not exhausted or len(out) >= n
        return ChangelogRead(out, checkpoint, more=more, behind=not exhausted)

    def confirm(self, checkpoint: str) -> None:
        p = checkpoint.split("/")
        cl = self.names.qcl
        # Rows visible in a snapshot this session has already confirmed are gone, and every transaction below
        # its xmin is visible in it: the delete starts there, not at the changelog's first txid (whose index
        # entries of deleted rows stay until vacuum, and were walked by every confirm).
        since = ("txid >= txid_snapshot_xmin(CAST(:since AS txid_snapshot)) AND "
                 if self._deleted is not None else "")
        if p[0] == "c":
            self.db.execute(f"DELETE FROM {cl} WHERE {since}txid < txid_snapshot_xmax(CAST(:b AS txid_snapshot)) "
                            "AND txid_visible_in_snapshot(txid, CAST(:b AS txid_snapshot))",
                            {"b": p[2], "since": self._deleted})
            self._deleted = p[2]
        else:
            last, lo, hi = int(p[2]), p[3], p[4]
            self.db.execute(
                f"DELETE FROM {cl} WHERE {since}txid < txid_snapshot_xmax(CAST(:hi AS txid_snapshot)) AND ("
                "  txid_visible_in_snapshot(txid, CAST(:lo AS txid_snapshot)) OR "
                "  (id <= :last AND txid_visible_in_snapshot(txid, CAST(:hi AS txid_snapshot))))",
                {"lo": lo, "hi": hi, "last": last, "since": self._deleted})
            self._deleted = lo


DIALECT = PostgresqlDialect()
