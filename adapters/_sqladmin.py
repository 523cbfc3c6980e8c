"""`cdc-agent check` / `setup` for a `sql` target: the replica tables exist with the source's columns and
key, and `cdc_agent_offsets` exists (setup creates it, and missing replica tables typed from the source)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, MetaData, String, Table, inspect
from sqlalchemy import types as sqltypes
from sqlalchemy.schema import CreateTable

from adapters._sqlmark import check_marking
from adapters._sqlowns import CONFLICTS_TABLE, conflicts_table
from adapters._sqlreplica import OFFSETS_TABLE, offsets_table, split_name
from agent.changes import CheckItem
from agent.secrets import redact


def source_engine(cfg):
    """A SQLAlchemy engine on the capture's source database (reconcile reads it; check reads its columns)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    dsn = cfg.source.dsn
    kind = cfg.source.kind
    if kind == "postgres":
        if "://" in dsn:
            u = make_url(dsn.replace("postgres://", "postgresql://", 1))
            return create_engine(u.set(drivername="postgresql+psycopg"), pool_pre_ping=True)
        import psycopg
        return create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), pool_pre_ping=True)
    if kind == "mysql":
        u = make_url(dsn)
        return create_engine(u.set(drivername="mysql+pymysql"), pool_pre_ping=True)
    from agent.sources.trigger.dsn import parse_dsn
    t = parse_dsn(dsn)
    if t.url is None:
        raise ValueError("reconcile reads trigger sources through SQLAlchemy; this ODBC dsn has no SQLAlchemy "
                         "dialect (use a postgresql+psycopg:// URL)")
    return create_engine(t.url, pool_pre_ping=True)


def source_table_name(cfg, table: str) -> tuple[str | None, str]:
    schema, _, name = table.rpartition(".")
    if cfg.source.kind == "trigger" and cfg.source.dsn.startswith("sqlite"):
        return None, name
    return schema or None, name


def replica_type(t: Any, is_key: bool, dialect: str = "") -> Any:
    """A source column's type for a replica table on another database: its generic SQLAlchemy form."""
    try:
        g = t.as_generic()
    except Exception:                             # a type with no generic form (e.g. inet)
        name = type(t).__name__.upper()
        g = sqltypes.JSON() if name in ("JSON", "JSONB") else sqltypes.Text()
    if isinstance(g, sqltypes.String) and g.length is None and is_key:
        g = String(255)                           # MySQL cannot index TEXT: a key needs a length
    if dialect == "mssql" and isinstance(g, sqltypes.Text):
        g = sqltypes.Unicode()                    # NVARCHAR(max): SQL Server's TEXT is deprecated and cannot compare
    if dialect == "mssql" and isinstance(g, sqltypes.LargeBinary):
        g = sqltypes.VARBINARY()                  # VARBINARY(max), not the deprecated IMAGE
    if isinstance(g, sqltypes.Float):             # PostgreSQL's float8 reflects with precision=53: MySQL refuses it
        g = sqltypes.Double() if isinstance(g, sqltypes.Double) else sqltypes.Float()
    if isinstance(g, sqltypes.DateTime):
        g = sqltypes.DateTime(timezone=getattr(t, "timezone", False))
    return g


class SqlAdmin:
    def __init__(self, cfg, settings):
        from adapters.sql import make_engine
        self.cfg, self.settings, self.options = cfg, settings, settings.options
        self.engine = make_engine(self.options.url)
        self.dialect = self.engine.dialect.name
        self.label = f"target {settings.name}"

    def _source_columns(self) -> dict[str, tuple[list[dict], tuple[str, ...]]] | None:
        try:
            eng = source_engine(self.cfg)
            insp = inspect(eng)
            out = {}
            for src in self.options.tables:
                schema, name = source_table_name(self.cfg, src)
                out[src] = (insp.get_columns(name, schema=schema),
                            tuple(insp.get_pk_constraint(name, schema=schema).get("constrained_columns") or ()))
            eng.dispose()
            return out
        except Exception:        # the source's own check says why it is unreachable
            return None

    def _renames(self, src: str) -> dict[str, str]:
        return {k.rpartition(".")[2]: v for k, v in self.options.columns.items() if k.rpartition(".")[0] == src}

    def check(self) -> list[CheckItem]:
        items: list[CheckItem] = []
        try:
            insp = inspect(self.engine)
        except Exception as e:
            return [CheckItem(f"{self.label}: connect", False, redact(str(e).splitlines()[0]),
                              "check the target's url, and that the database is up")]
        items.append(CheckItem(f"{self.label}: connect", True, f"{self.dialect} replica reachable"))
        has_offsets = insp.has_table(OFFSETS_TABLE)
        items.append(CheckItem(f"{self.label}: {OFFSETS_TABLE}", has_offsets,
                               "exists" if has_offsets else "missing (created by setup, or by the first run when "
                                                             "the target's user may CREATE TABLE)",
                               f"cdc-agent setup -c {self.cfg.path}", warning=not has_offsets))
        if self.options.mark_writes:
            items += check_marking(self.engine, self.options, self.label, str(self.cfg.path))
        source = self._source_columns()
        for src, dst in self.options.tables.items():
            schema, name = split_name(dst, self.dialect)
            what = f"{self.label}: table {dst}"
            if not insp.has_table(name, schema=schema):
                items.append(CheckItem(what, False, "does not exist",
                                       f"cdc-agent setup -c {self.cfg.path} creates it from {src}'s columns"))
                continue
            cols = {c["name"] for c in insp.get_columns(name, schema=schema)}
            pk = tuple(insp.get_pk_constraint(name, schema=schema).get("constrained_columns") or ())
            owned_here = [self._renames(src).get(c, c) for c in self.options.owns.get(src, ())]
            if [c for c in owned_here if c not in cols]:
                items.append(CheckItem(f"{self.label}: owns {src}", False, f"replica table {dst} has no column "
                                       f"{', '.join(c for c in owned_here if c not in cols)}",
                                       "fix owns, or add the column to the replica table"))
                continue
            if not pk:
                items.append(CheckItem(what, False, "has no primary key (upserts need the source's key)",
                                       "add a primary key on the columns of the source table's key"))
                continue
            if source is None:
                items.append(CheckItem(what, True, f"exists, key ({', '.join(pk)}); source columns not compared "
                                                   "(source unreachable)", warning=False))
                continue
            scols, skey = source[src]
            ren = self._renames(src)
            owned = self.options.owns.get(src)
            if owned is not None:
                unknown = [c for c in owned if c not in {sc["name"] for sc in scols}]
                if unknown:
                    items.append(CheckItem(f"{self.label}: owns {src}", False, f"names column(s) "
                                           f"{', '.join(unknown)}, which the source table does not have",
                                           "fix owns (source column names, before renames)"))
                scols = [c for c in scols if c["name"] in owned or c["name"] in skey]
            want = [ren.get(c["name"], c["name"]) for c in scols]
            missing = [c for c in want if c not in cols]
            want_key = tuple(ren.get(k, k) for k in skey)
            if missing:
                items.append(CheckItem(what, False, f"lacks column(s) {', '.join(missing)} of {src}",
                                       "add them, or rename with the target's columns option"))
            elif set(want_key) != set(pk):
                items.append(CheckItem(what, False, f"key ({', '.join(pk)}) is not the source key "
                                                    f"({', '.join(want_key)})",
                                       "make the replica's primary key the source table's key"))
            else:
                items.append(CheckItem(what, True, f"exists with the {len(want)} columns and key ({', '.join(pk)})"))
        return items

    def _ddl(self) -> list[tuple[str, Table]]:
        out = []
        insp = inspect(self.engine)
        if not insp.has_table(OFFSETS_TABLE):
            out.append((OFFSETS_TABLE, offsets_table(MetaData())))
        if self.options.owns and not insp.has_table(CONFLICTS_TABLE):
            out.append((CONFLICTS_TABLE, conflicts_table(MetaData())))
        missing = [(s, d) for s, d in self.options.tables.items()
                   if not insp.has_table(*reversed(split_name(d, self.dialect)))]
        if missing:
            source = self._source_columns()
            if source is None:
                raise ValueError("the source database is unreachable: cannot derive the missing replica tables "
                                 f"({', '.join(d for _, d in missing)}) from its columns")
            for src, dst in missing:
                scols, skey = source[src]
                if src in self.options.owns:        # two-way sync: the key and the owned columns
                    scols = [c for c in scols if c["name"] in self.options.owns[src] or c["name"] in skey]
                ren = self._renames(src)
                schema, name = split_name(dst, self.dialect)
                # autoincrement off: the replica takes the source's key values (no SERIAL, no IDENTITY)
                cols = [Column(ren.get(c["name"], c["name"]), replica_type(c["type"], c["name"] in skey, self.dialect),
                               primary_key=c["name"] in skey, autoincrement=False,
                               nullable=c.get("nullable", True) or c["name"] in skey)
                        for c in scols]
                out.append((dst, Table(name, MetaData(), *cols, schema=schema)))
        return out

    def setup_sql(self) -> list[str]:
        return [str(CreateTable(t).compile(self.engine)).strip() for _, t in self._ddl()]

    def setup(self) -> list[str]:
        done = []
        ddl = self._ddl()              # before the transaction: on SQLite, reflection needs its own connection
        with self.engine.begin() as conn:
            for what, t in ddl:
                t.create(conn, checkfirst=True)
                done.append(f"{self.label}: created table {what}")
        return done or [f"{self.label}: {OFFSETS_TABLE} and the replica tables exist already"]
