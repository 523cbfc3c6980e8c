"""The replica side of the `sql` target: reflected tables, the upsert/delete statements per dialect, one
transaction per batch with the position in `cdc_agent_offsets`. Used by adapters/sql.py and by reconcile's
repair (agent/reconcile.py), which writes through the same statements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (Column, DateTime, MetaData, String, Table, and_, bindparam, delete, func, select, text,
                        tuple_, update)
from sqlalchemy import exc as sa_exc
from sqlalchemy import types as sqltypes
from sqlalchemy import insert as generic_insert

from adapters._sqlowns import Origin, Outcome, check_rows, clear_journal, conflicts_table, read_journal, write_journal
from adapters._sqlvalues import _pg_text_cast, comparable, comparable_json, comparer_for, writer_for
from agent.errors import TargetUnavailable
from agent.secrets import redact

OFFSETS_TABLE = "cdc_agent_offsets"


class DataProblem(Exception):
    """The database refused a value (too long, out of range, NOT NULL, a constraint): not retriable."""


def db_error(e: BaseException) -> str | None:
    """A database/driver error as one line (secrets removed), or None when `e` is not one (a bug)."""
    if isinstance(e, TargetUnavailable):
        return str(e)
    if isinstance(e, sa_exc.DBAPIError):
        orig = e.orig if e.orig is not None else e
        first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
        return redact(f"replica database: {type(orig).__name__}: {first}")
    if isinstance(e, (sa_exc.SQLAlchemyError, OSError)):
        return redact(f"replica database: {type(e).__name__}: {e}")
    return None


def split_name(name: str, dialect: str) -> tuple[str | None, str]:
    schema, _, table = name.rpartition(".")
    if dialect == "sqlite" and schema != "main":
        schema = ""        # one schema per SQLite file: "public.customers" is table customers
    return (schema or None), table


def offsets_table(metadata: MetaData) -> Table:
    return Table(OFFSETS_TABLE, metadata,
                 Column("agent", String(200), primary_key=True),
                 Column("target", String(200), primary_key=True),
                 Column("position", String(100), nullable=False),
                 Column("updated_at", DateTime, nullable=False))


@dataclass
class Plan:
    """How the events of one source table land in one replica table."""

    source: str
    table: Table                                 # the replica table, columns typed for binding
    key: tuple[str, ...]                         # replica key columns
    rename: dict[str, str]                       # source column -> replica column
    writers: dict[str, Any]                      # replica column -> conversion
    statements: dict[tuple, Any] = field(default_factory=dict)
    # two-way sync (owns): the replica columns this source owns (None: whole rows), the source columns written
    # (owned + key), what a delete does, and per owned column the comparable form (adapters/_sqlowns.py)
    owned: frozenset[str] | None = None
    written: frozenset[str] = frozenset()
    deletes: str = "apply"
    comparers: dict[str, Any] = field(default_factory=dict)
    json_columns: frozenset[str] = frozenset()
    text_columns: frozenset[str] = frozenset()  # owned columns read back as text (PostgreSQL interval)


class Replica:
    def __init__(self, engine, options, reflect: bool = True, marking=None):
        self.engine = engine
        self.marking = marking                   # adapters/_sqlmark.Marking: SQLite marks each transaction
        self.dialect = engine.dialect.name
        self.options = options
        self.plans: dict[str, Plan] = {}
        self.offsets = offsets_table(MetaData())
        self.journal = conflicts_table(MetaData())
        if reflect:
            self._reflect()

    def _reflect(self) -> None:
        from sqlalchemy import inspect
        insp = inspect(self.engine)
        renames: dict[str, dict[str, str]] = {}
        for k, v in self.options.columns.items():
            t, _, c = k.rpartition(".")
            renames.setdefault(t, {})[c] = v
        for src, dst in self.options.tables.items():
            schema, name = split_name(dst, self.dialect)
            if not insp.has_table(name, schema=schema):
                raise TargetUnavailable(f"replica table {dst} does not exist (cdc-agent setup -c ... creates it, "
                                        "or create it with the key of the source table)")
            cols = insp.get_columns(name, schema=schema)
            pk = tuple(insp.get_pk_constraint(name, schema=schema).get("constrained_columns") or ())
            if not pk:
                raise TargetUnavailable(f"replica table {dst} has no primary key (upserts need the source key)")
            md = MetaData()
            writers, columns = {}, []
            for c in cols:
                w, bind_type = writer_for(c["type"], self.dialect)
                writers[c["name"]] = w
                columns.append(Column(c["name"], bind_type, primary_key=c["name"] in pk))
            table = Table(name, md, *columns, schema=schema)
            plan = self.plans[src] = Plan(src, table, pk, renames.get(src, {}), writers,
                                          deletes=self.options.deletes_for(src))
            if src in self.options.owns:
                _own(plan, self.options.owns[src], {c["name"]: c["type"] for c in cols},
                     _json_checked(self.engine, name, schema) if self.dialect in ("mysql", "mariadb") else set())

    @property
    def owns(self) -> bool:
        return any(p.owned is not None for p in self.plans.values())

    def forget_connection(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------ events into changes

    def changes_of(self, table_and_data: tuple[str, dict], event_id: str = "", subject: str = "") -> list[tuple]:
        """[(plan, "u"|"d", key tuple, row, Origin | None)] for one event's data (deletes carry no row; the
        Origin, for an owns table, is what conflict detection needs); ValueError for a value the column cannot
        take."""
        table, data = table_and_data
        plan = self.plans.get(table)
        if plan is None:
            return []                              # a table this target does not replicate
        op = data["op"]
        if op == "delete":
            if plan.deletes == "ignore":
                return []
            return [(plan, "d", self._key(plan, data["key"]), None, None)]
        after = data["after"]
        if after is None:
            raise ValueError(f"{op} without an after image")
        skip = set(data.get("unavailable") or ())
        before = data.get("before")
        origin = None
        if plan.owned is not None:                 # only the owned columns and the key are written
            after = {c: v for c, v in after.items() if c in plan.written}
            owned_before = None
            if op == "update" and before:
                owned_before = self.row(plan, {c: v for c, v in before.items() if c in plan.written and
                                               c not in skip}, set(), keyless=True)
            unowned = tuple(c for c in (data.get("changed") or ()) if c not in plan.written) if op == "update" else ()
            origin = Origin(event_id, subject, owned_before, unowned)
        row = self.row(plan, after, skip)
        key = tuple(row[k] for k in plan.key)
        out: list[tuple] = []
        if op == "update" and before:
            try:
                old = self.row(plan, {c: before[c] for c in before if plan.rename.get(c, c) in plan.key}, set())
                old_key = tuple(old[k] for k in plan.key)
            except KeyError:
                old_key = key
            if old_key != key and plan.deletes == "apply":      # the key itself changed: the old row goes
                out.append((plan, "d", old_key, None, None))
        out.append((plan, "u", key, row, origin))
        return out

    def row(self, plan: Plan, values: dict, skip: set, keyless: bool = False) -> dict:
        names = tuple(values)
        kind = "row" if not keyless else "row-keyless"
        spec = plan.statements.get((kind, names)) if not skip else None
        if spec is None:
            spec = []
            for c in names:
                col = plan.rename.get(c, c)
                if col not in plan.writers:
                    if c in skip:
                        spec.append(None)
                        continue
                    raise TargetUnavailable(f"replica table {plan.table.fullname} has no column {col} (source "
                                            f"{plan.source}); add it or rename it with columns")
                spec.append(None if c in skip else (col, plan.writers[col]))
            if not skip:
                plan.statements[(kind, names)] = spec
            missing = [k for k in plan.key if k not in {s[0] for s in spec if s is not None}]
            if missing and not keyless:
                raise ValueError(f"key column {missing[0]} is missing from the row")
        row = {}
        for sp, v in zip(spec, values.values()):
            if sp is not None:
                try:
                    row[sp[0]] = sp[1](v)
                except ValueError as e:
                    raise ValueError(f"column {sp[0]}: {e}") from None
        return row

    def _key(self, plan: Plan, key: dict) -> tuple:
        named = {plan.rename.get(c, c): v for c, v in key.items()}
        try:
            return tuple(plan.writers[k](named[k]) for k in plan.key)
        except KeyError:
            raise ValueError(f"the event's key {sorted(key)} is not the replica key {list(plan.key)}") from None

    # ------------------------------------------------------------ one batch, one transaction

    def apply(self, changes: list[tuple], agent: str, target: str, position: str) -> Outcome:
        """One transaction: the rows, the conflicts found (cdc_agent_conflicts), the position."""
        try:
            with self.engine.begin() as conn:
                marked = self.marking is not None and self.marking.begin(conn)
                outcome = self.apply_in(conn, changes)
                if outcome.conflicts:
                    write_journal(conn, self.journal, agent, target, outcome.conflicts, self._journal_upsert())
                if position:
                    self.write_position(conn, agent, target, position)
                if marked:
                    self.marking.end(conn)
            return outcome
        except (sa_exc.DataError, sa_exc.IntegrityError) as e:
            orig = e.orig if e.orig is not None else e
            raise DataProblem(redact(f"replica refused a value: {str(orig).strip().splitlines()[0]}")) from None

    def _journal_upsert(self):
        t = self.journal
        plan = Plan("", t, ("agent", "target", "event_id", "col"), {}, {})
        return upsert_statement(plan, tuple(c.name for c in t.columns), self.dialect)

    def take_journal(self, agent: str, target: str) -> list[dict]:
        """The conflicts recorded in the target database and not yet copied into the agent's state."""
        with self.engine.connect() as conn:
            return read_journal(conn, self.journal, agent, target)

    def clear_journal(self, agent: str, target: str, rows: list[dict]) -> None:
        with self.engine.begin() as conn:
            clear_journal(conn, self.journal, agent, target, rows)

    def apply_in(self, conn, changes: list[tuple]) -> Outcome:
        """Apply `changes` (in source order) as their net effect per row: each key's last change wins (an
        update without its unavailable columns merges into the image before it). Then one statement per
        table for the deletes, and one per table and column set for the upserts. Only the order per key
        matters for the result, so different keys are not kept in order: the replica's tables must not
        constrain each other (foreign keys between replica tables, or unique keys besides the primary
        key, could see an intermediate state no source transaction had)."""
        final: dict[tuple, tuple] = {}
        first: dict[tuple, Origin | None] = {}      # owns tables: the Origin of each key's first change
        outcome = Outcome()
        for change in changes:
            plan, kind, key, row = change[:4]
            k = (plan.source, key)
            if plan.owned is not None:
                origin = change[4] if len(change) > 4 else None
                # only an update's before can be compared; an insert or read is a plain upsert of the owned values
                first.setdefault(k, origin if kind == "u" and origin is not None and origin.before is not None
                                 else None)
                if origin is not None:
                    for c in origin.unowned:
                        outcome.unowned[(plan.source, c)] += 1
            prev = final.pop(k, None)
            if kind == "u" and prev is not None and prev[1] == "u" and prev[2].keys() != row.keys():
                row = {**prev[2], **row}
            final[k] = (plan, kind, row, key)
        skip: set = set()
        checks = [(plan, key, row, first[(plan.source, key)]) for plan, kind, row, key in final.values()
                  if kind == "u" and plan.owned is not None and first.get((plan.source, key)) is not None]
        if checks:
            outcome.conflicts, skip = check_rows(conn, self.dialect, checks)
        deletes: dict[str, tuple[Plan, list]] = {}
        upserts: dict[tuple, tuple[Plan, tuple, list]] = {}
        for plan, kind, row, key in final.values():
            if skip and (plan.source, key) in skip:
                continue
            if kind == "d":
                deletes.setdefault(plan.source, (plan, []))[1].append(key)
            else:
                cols = tuple(row)
                upserts.setdefault((plan.source, cols), (plan, cols, []))[2].append(row)
        for plan, keys in deletes.values():
            self._delete(conn, plan, keys)
        for plan, cols, rows in upserts.values():
            self._upsert(conn, plan, cols, rows)
        return outcome

    def _upsert(self, conn, plan: Plan, cols: tuple, rows: list[dict]) -> None:
        prepared = plan.statements.get(("u", cols))
        if prepared is None:
            prepared = plan.statements[("u", cols)] = _prepare(upsert_statement(plan, cols, self.dialect),
                                                               self.engine.dialect, cols)
        if isinstance(prepared, tuple):
            sql, order, positional = prepared
            params: list[tuple[Any, ...]] | list[dict[str, Any]]
            if positional:
                params = [tuple(p(r[c]) if p else r[c] for c, p in order) for r in rows]
            else:
                params = [{c: (p(r[c]) if p else r[c]) for c, p in order} for r in rows]
            conn.exec_driver_sql(sql, params)
        else:
            conn.execute(prepared, rows)

    def _delete(self, conn, plan: Plan, keys: list[tuple]) -> None:
        t = plan.table
        if len(plan.key) == 1:
            col = t.c[plan.key[0]]
            for s in range(0, len(keys), 1000):
                conn.execute(delete(t).where(col.in_([k[0] for k in keys[s:s + 1000]])))
            return
        stmt = delete(t).where(and_(*(t.c[k] == bindparam(f"k_{k}") for k in plan.key)))
        conn.execute(stmt, [{f"k_{k}": v for k, v in zip(plan.key, key)} for key in keys])

    # ------------------------------------------------------------ the position

    def open_position(self, agent: str, target: str) -> str | None:
        """Create `cdc_agent_offsets` if missing, make sure this target has its row, return its position."""
        t = self.offsets
        with self.engine.begin() as conn:
            t.metadata.create_all(conn, checkfirst=True)
            if self.owns:
                self.journal.metadata.create_all(conn, checkfirst=True)
            pos = conn.execute(select(t.c.position).where(t.c.agent == agent, t.c.target == target)).scalar()
            if pos is None:
                conn.execute(generic_insert(t).values(agent=agent, target=target, position="",
                                                      updated_at=func.current_timestamp()))
        return pos or None

    def write_position(self, conn, agent: str, target: str, position: str) -> None:
        """Forward only: a dead letter retried later (an older position) leaves the position as it is."""
        t = self.offsets
        conn.execute(update(t).where(t.c.agent == agent, t.c.target == target, t.c.position < position)
                     .values(position=position, updated_at=func.current_timestamp()))


def _prepare(stmt, dialect, cols: tuple):
    """The statement compiled once, for the driver's executemany with the type's bind processors applied here
    (SQLAlchemy's per-row parameter processing is most of the cost of a large batch). A statement whose bind
    names are not plainly the column names keeps the ordinary path."""
    compiled = stmt.compile(dialect=dialect)
    procs = compiled._bind_processors
    names = list(compiled.positiontup) if compiled.positional else list(compiled.bind_names.values())
    if sorted(names) != sorted(cols) or compiled.literal_execute_params or compiled.post_compile_params:
        return stmt
    return compiled.string, [(n, procs.get(n)) for n in names], compiled.positional


def upsert_statement(plan: Plan, cols: tuple, dialect: str):
    """The dialect's insert-or-update by key for rows with columns `cols`, for executemany."""
    t = plan.table
    rest = [c for c in cols if c not in plan.key]
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        pg_stmt = pg_insert(t)
        if not rest:
            return pg_stmt.on_conflict_do_nothing(index_elements=list(plan.key))
        return pg_stmt.on_conflict_do_update(index_elements=list(plan.key),
                                             set_={c: pg_stmt.excluded[c] for c in rest})
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert
        lite_stmt = sqlite_insert(t)
        if not rest:
            return lite_stmt.on_conflict_do_nothing(index_elements=list(plan.key))
        return lite_stmt.on_conflict_do_update(index_elements=list(plan.key),
                                               set_={c: lite_stmt.excluded[c] for c in rest})
    if dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert as mysql_insert
        my_stmt = mysql_insert(t)
        keep = rest or [plan.key[0]]
        return my_stmt.on_duplicate_key_update({c: my_stmt.inserted[c] for c in keep})
    if dialect == "mssql":
        return text(mssql_merge_sql(plan, cols, dialect_quote=_mssql_quote)).bindparams(
            *(bindparam(c, type_=t.c[c].type) for c in cols))
    raise TargetUnavailable(f"no upsert for database {dialect}")


def _mssql_quote(name: str) -> str:
    return "[" + name.replace("]", "]]") + "]"


def mssql_merge_sql(plan: Plan, cols: tuple, dialect_quote=_mssql_quote) -> str:
    """SQL Server's upsert: MERGE with HOLDLOCK (without it two MERGEs can both take the insert branch)."""
    q = dialect_quote
    t = plan.table
    target = (q(t.schema) + "." if t.schema else "") + q(t.name)
    rest = [c for c in cols if c not in plan.key]
    src_cols = ", ".join(q(c) for c in cols)
    on = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in plan.key)
    sql = (f"MERGE INTO {target} WITH (HOLDLOCK) AS t USING (VALUES ({', '.join(':' + c for c in cols)})) "
           f"AS s ({src_cols}) ON {on}")
    if rest:
        sql += " WHEN MATCHED THEN UPDATE SET " + ", ".join(f"t.{q(c)} = s.{q(c)}" for c in rest)
    sql += f" WHEN NOT MATCHED THEN INSERT ({src_cols}) VALUES ({', '.join('s.' + q(c) for c in cols)});"
    return sql


def key_range(plan_table: Table, key: tuple[str, ...], after: tuple | None, upto: tuple | None):
    """WHERE for keys in (after, upto] (None: unbounded), for reconcile's chunks."""
    cols = [plan_table.c[k] for k in key]
    lhs = cols[0] if len(cols) == 1 else tuple_(*cols)
    conds = []
    if after is not None:
        conds.append(lhs > (after[0] if len(cols) == 1 else tuple_(*after)))
    if upto is not None:
        conds.append(lhs <= (upto[0] if len(cols) == 1 else tuple_(*upto)))
    return and_(*conds) if conds else None


def _json_checked(engine, name: str, schema: str | None) -> set[str]:
    """MariaDB's JSON columns: LONGTEXT with a json_valid(col) CHECK, reflected as text (agent/myvalues.py)."""
    from agent.myvalues import logical_types_from_rows
    sql = ("SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
           "WHERE CONSTRAINT_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s AND CHECK_CLAUSE LIKE %s")
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(sql, (schema, name, "%json_valid(%")).all()
    except sa_exc.ProgrammingError:          # MySQL before 8.0.16: no CHECK_CONSTRAINTS; its JSON is JSON
        return set()
    return {c for cols in logical_types_from_rows((), rows).values() for c in cols}


def _own(plan: Plan, owned_source: tuple[str, ...], types: dict[str, Any], json_text: set[str]) -> None:
    """Restrict `plan` to the owned columns (source names, renamed as the target says) and the key."""
    owned = {plan.rename.get(c, c) for c in owned_source}
    missing = sorted(c for c in owned if c not in plan.writers)
    if missing:
        raise TargetUnavailable(f"owns.{plan.source}: replica table {plan.table.fullname} has no column "
                                f"{', '.join(missing)}; fix owns, or add the column")
    back = {v: k for k, v in plan.rename.items()}
    plan.owned = frozenset(owned - set(plan.key))
    plan.written = frozenset(owned_source) | {back.get(k, k) for k in plan.key}
    plan.json_columns = frozenset(c for c in plan.owned if c in json_text or isinstance(types[c], sqltypes.JSON)
                                  or type(types[c]).__name__.upper() in ("JSON", "JSONB"))
    plan.comparers = {c: comparable_json if c in plan.json_columns else comparer_for(types[c]) for c in plan.owned}
    for c in plan.owned:          # PostgreSQL interval: read back as text, in the contract's ISO 8601 form
        if type(types[c]).__name__.upper() == "INTERVAL" and plan.writers[c] is _pg_text_cast:
            plan.text_columns |= {c}
            plan.comparers[c] = _interval_comparable


def _interval_comparable(v: Any) -> Any:
    from agent.pgvalues import interval_text_to_iso
    return interval_text_to_iso(v) if isinstance(v, str) else comparable(v)
