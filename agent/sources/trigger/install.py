"""`setup`, `teardown` and `check` for trigger capture: versioned migrations of the changelog, triggers
rendered per table from migrations/trigger/<dialect>/table.vNNN.sql, and the installed version."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from ...changes import CheckItem, rule_column_checks
from ...errors import SourceError, SourceFatal, SourceUnavailable
from ...secrets import redact
from ...shipped import shipped
from .catalog import ConfiguredCapture, Names, installed_triggers, installed_version, load_table
from .db import Db, friendly
from .dialect import TableInfo

if TYPE_CHECKING:
    from ...config import Config

MIGRATIONS = shipped("migrations/trigger")

_PH_RE = re.compile(r"\{\{(\w+)\}\}")


# ================================================================== templates


def render(template: str, values: dict[str, str]) -> list[str]:
    """Fill {{placeholders}} and split into statements (a line holding only ';' separates them); leading
    comment lines of each statement are dropped (they document the files, not the catalog)."""
    def sub(m: re.Match) -> str:
        if m.group(1) not in values:
            raise KeyError(f"template placeholder {m.group(1)} has no value")
        return values[m.group(1)]
    text = _PH_RE.sub(sub, template)
    out = []
    for chunk in re.split(r"(?m)^\s*;\s*$", text):
        lines = chunk.strip("\n").splitlines()
        while lines and (not lines[0].strip() or lines[0].lstrip().startswith("--")):
            lines.pop(0)
        stmt = "\n".join(lines).strip()
        if stmt:
            out.append(stmt)
    return out


def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """(version, name, template text), ascending."""
    out = []
    for f in sorted((MIGRATIONS / dialect).glob("[0-9][0-9][0-9]_*.sql")):
        out.append((int(f.name[:3]), f.stem[4:], f.read_text(encoding="utf-8")))
    return out


def newest_version(dialect: str) -> int:
    m = migrations(dialect)
    return m[-1][0] if m else 0


def table_template(dialect: str, version: int, suffix: str = "") -> str:
    """The highest `table.vNNN.sql` not newer than `version`; `table.vNNN<suffix>.sql` where it exists for
    the same or a higher NNN."""
    best = None
    files = [(f, 0) for f in (MIGRATIONS / dialect).glob("table.v[0-9][0-9][0-9].sql")]
    if suffix:
        files += [(f, 1) for f in (MIGRATIONS / dialect).glob(f"table.v[0-9][0-9][0-9]{suffix}.sql")]
    for f, _ in sorted(files, key=lambda x: (int(x[0].name[7:10]), x[1])):
        v = int(f.name[7:10])
        if v <= version:
            best = f
    if best is None:
        raise SourceFatal(f"no trigger template for {dialect} version {version}")
    return best.read_text(encoding="utf-8")


def template_file(dialect: str, name: str) -> str:
    return (MIGRATIONS / dialect / name).read_text(encoding="utf-8")


def table_values(names: Names, info: TableInfo) -> dict[str, str]:
    """The placeholders of the table template for one table."""
    sql = names.sql
    schema, tname = info.name.split(".", 1)
    v = dict(names.common())
    v.update({"table": info.name, "table_lit": sql.literal(info.name), "qtable": names.q(schema, tname),
              "qtable_name": sql.quote(tname)})
    v.update(sql.table_values(names, info))
    return v


def trigger_names(names: Names, table: str) -> list[str]:
    return names.sql.trigger_names(names, table)


def _norm_sql(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip().lower()


def _catalog_read(fn: Callable, *args: Any) -> Any:
    """Run a catalog-reading step; a driver error becomes SourceUnavailable (the agent retries), an error
    of ours passes unchanged."""
    try:
        return fn(*args)
    except SourceError:
        raise
    except Exception as e:
        raise SourceUnavailable(f"cannot read the catalog: {friendly(e)}") from None


def _seed() -> int:
    return int(time.time() * 1_000_000)


# ================================================================== admin


class TriggerAdmin(ConfiguredCapture):
    def __init__(self, cfg: Config):
        super().__init__(cfg)

    def _connect(self) -> Db:
        return Db(self.target)

    # -------------------------------------------------------------- planning

    def plan(self, db: Db, upto: int | None = None) -> tuple[list[tuple[str, str, int | None]], int, int]:
        """What `setup` would run: (statement, what it does, version it records), installed and target
        version. A catalog error becomes SourceUnavailable, so `run` retries instead of stopping."""
        return _catalog_read(self._plan, db, upto)

    def _plan(self, db: Db, upto: int | None = None) -> tuple[list[tuple[str, str, int | None]], int, int]:
        names, d = self.names, self.dialect
        have = installed_version(db, names)
        newest = newest_version(d)
        goal = newest if upto is None else min(upto, newest)
        stmts: list[tuple[str, str, int | None]] = []
        seed = _seed()
        after = max(have, goal)
        for v, vname, tmpl in migrations(d):
            if have < v <= goal:
                parts = render(tmpl, names.common(seed))
                for i, s in enumerate(parts):
                    stmts.append((s, f"version {v:03d} {vname}", v if i == len(parts) - 1 else None))
                stmts.append((self._record_sql(v, vname), f"version {v:03d} {vname}", None))
        if after == 0:
            return stmts, have, after
        installed = installed_triggers(db, names) if have else {}
        tmpl = table_template(d, after, self.sql.template_suffix(names))
        for table in self.cfg.source.tables:
            info = load_table(db, table)
            if info is None:
                raise SourceFatal(f"table {table} does not exist (source.tables in {self.file})")
            rendered = render(tmpl, table_values(names, info))
            wanted = trigger_names(names, table)
            current = {n: installed.get((table, n)) for n in wanted}
            if all(current.values()) and (self.sql.generic_trigger or after == have and self._same(rendered, current)):
                continue
            self._probe(db, info)
            what = f"triggers on {table}" if not any(current.values()) else f"triggers on {table} (re-created)"
            stmts.extend((s, what, None) for s in self.sql.replace_triggers(db, names, info, rendered, current))
        stale = [(t, n) for (t, n) in installed if t not in self.cfg.source.tables]
        for t, n in stale:
            stmts.append((self._drop_trigger_sql(t, n), f"drop trigger on {t} (no longer captured)", None))
        return stmts, have, after

    def _probe(self, db: Db, info: TableInfo) -> str | None:
        """Prove the trigger's row image evaluates on the table before installing it (a trigger that fails
        would fail the ERP's writes): a read-only SELECT of the same expression. Returns what it checked."""
        sql = self.sql.probe_sql(self.names, info)
        if sql is None:
            return None
        try:
            db.query(sql)
        except Exception as e:
            raise SourceFatal(f"the trigger's row image does not evaluate on {info.name}: {friendly(e)}; no "
                              f"trigger was installed on it (installing it would fail the table's writes)") from None
        return "row image evaluates"

    def _same(self, rendered: list[str], current: dict[str, str | None]) -> bool:
        bodies = sorted(_norm_sql(self.sql.trigger_body(s)) for s in rendered)
        have = sorted(_norm_sql(self.sql.trigger_body(b or "")) for b in current.values())
        return bodies == have

    def _drop_trigger_sql(self, table: str, trigger: str) -> str:
        return self.sql.drop_trigger_sql(self.names, table, trigger)

    def _record_sql(self, v: int, name: str) -> str:
        return (f"INSERT INTO {self.names.qversion} (version, name, applied_at) "
                f"VALUES ({v}, {self.sql.literal(name)}, {self.sql.now_sql()})")

    # -------------------------------------------------------------- CaptureAdmin

    def setup_sql(self) -> list[str]:
        db = self._connect()
        try:
            stmts, have, after = self.plan(db)
        finally:
            db.close()
        return [s for s, _, _ in stmts]

    def setup(self, upto: int | None = None) -> list[str]:
        db = self._connect()
        try:
            stmts, have, after = self.plan(db, upto)
            if not stmts:
                return [f"trigger capture is up to date (version {have:03d}, {len(self.cfg.source.tables)} "
                        f"table(s)); nothing to do"]
            done: list[str] = []
            tx = self.sql.transactional_ddl
            if tx:
                db.begin()
            try:
                for sql, what, _ in stmts:
                    db.script(sql)
                    if not done or done[-1] != what:
                        done.append(what)
                if tx:
                    db.commit()
            except Exception as e:
                if tx:
                    db.rollback()
                else:
                    self.sql.recover_failed_setup(db)
                raise SourceFatal(f"setup failed at {what}: {friendly(e)}") from None
            lines = [f"applied: {w}" for w in done]
            if after != have:
                lines.append(f"trigger capture at version {after:03d} (was "
                             f"{'not installed' if not have else f'{have:03d}'})")
            return lines
        finally:
            db.close()

    def teardown_sql(self) -> list[str]:
        db = self._connect()
        try:
            return self._teardown_plan(db)
        finally:
            db.close()

    def _teardown_plan(self, db: Db) -> list[str]:
        return _catalog_read(self._teardown_stmts, db)

    def _teardown_stmts(self, db: Db) -> list[str]:
        names = self.names
        stmts = []
        for (table, trig) in installed_triggers(db, names):
            stmts.append(self._drop_trigger_sql(table, trig))
        have = installed_version(db, names) or self.sql.table_exists(db, names.schema, names.cl)
        if have:
            stmts += render(template_file(self.dialect, "teardown.sql"), names.common())
        return stmts

    def teardown(self) -> list[str]:
        db = self._connect()
        try:
            stmts = self._teardown_plan(db)
            if not stmts:
                return ["nothing to remove: no capture triggers or changelog found"]
            tx = self.sql.transactional_ddl
            if tx:
                db.begin()
            try:
                for s in stmts:
                    db.script(s)
                if tx:
                    db.commit()
            except Exception as e:
                if tx:
                    db.rollback()
                raise SourceFatal(f"teardown failed: {friendly(e)}") from None
            ntrig = sum(1 for s in stmts if s.upper().startswith("DROP TRIGGER"))
            return [f"removed {ntrig} trigger(s), the changelog {self.names.cl} and its version table"]
        finally:
            db.close()

    def check(self) -> list[CheckItem]:
        items: list[CheckItem] = []
        try:
            db = self._connect()
        except SourceError as e:
            items.append(CheckItem("connect", False, redact(str(e)),
                                   "check source.dsn: host, port, database, user; the password comes from "
                                   "the environment variable named in the dsn"))
            return items
        try:
            self._checks(db, items)
        except Exception as e:
            items.append(CheckItem("catalog", False, f"cannot read the catalog: {friendly(e)}",
                                   "the agent's user needs to read the catalog of the captured tables"))
        finally:
            db.close()
        return items

    def _checks(self, db: Db, items: list[CheckItem]) -> None:
        names, d, sql = self.names, self.dialect, self.sql
        version = self._server_version(db)
        items.append(CheckItem("connect", True, f"{d} {version}".strip()))
        have, newest = installed_version(db, names), newest_version(d)
        if have == 0:
            items.append(CheckItem("changelog", False, f"{names.schema}.{names.cl} is not installed",
                                   "run `cdc-agent setup` (or review it first: `cdc-agent setup --dry-run`)"))
        elif have < newest:
            items.append(CheckItem("changelog", False, f"installed version {have:03d}, this agent brings {newest:03d}",
                                   "run `cdc-agent setup` to upgrade (the agent also does it at start when "
                                   "it has the privileges)", warning=True))
        else:
            items.append(CheckItem("changelog", True, f"{names.schema}.{names.cl} version {have:03d} (newest)"))
        items.extend(sql.privileges(db, names, self.cfg.source.tables, self.target, have))
        items.append(sql.watermark_check(db, names, have))
        no_key: list[str] = []
        installed = installed_triggers(db, names) if have else {}
        tmpl = table_template(d, max(have, 1), sql.template_suffix(names))
        for table in self.cfg.source.tables:
            info = load_table(db, table)
            if info is None:
                items.append(CheckItem(f"table {table}", False, "does not exist",
                                       f"create it, or remove it from source.tables in {self.file}"))
                continue
            items.extend(rule_column_checks(self.cfg.events, table, [c.name for c in info.columns], self.file))
            if not info.key:
                no_key.append(table)
                rule_keys = any(r.key for r in self.cfg.events if r.table == table)
                items.append(CheckItem(f"table {table}", False, "has no primary key: events have no stable key"
                                       + (" and updates cannot be paired" if sql.pairs_updates_by_key else ""),
                                       f"ALTER TABLE {table} ADD PRIMARY KEY (...)",
                                       warning=rule_keys and not sql.pairs_updates_by_key))
            wanted = trigger_names(names, table)
            current = {n: installed.get((table, n)) for n in wanted}
            if not all(current.values()):
                items.append(CheckItem(f"triggers {table}", False, "not installed", "run `cdc-agent setup`"))
            elif not sql.generic_trigger and not self._same(render(tmpl, table_values(names, info)), current):
                items.append(CheckItem(f"triggers {table}", False,
                                       "installed, but written for other columns or an older version: changes "
                                       "to new columns are not captured", "run `cdc-agent setup` (it re-creates "
                                       "them)"))
            else:
                items.append(CheckItem(f"table {table}", True, f"primary key ({', '.join(info.key)}), triggers "
                                                               f"installed" if info.key else "triggers installed"))
            if sql.probe_sql(names, info) is not None:
                try:
                    self._probe(db, info)
                    items.append(CheckItem(f"row image {table}", True, "the trigger's JSON row image evaluates on "
                                                                      "the table (a SELECT of it, LIMIT 1)"))
                except SourceFatal as e:
                    items.append(CheckItem(f"row image {table}", False, str(e),
                                           "report this as a bug; until fixed, take the table out of "
                                           "source.tables and run `cdc-agent setup`"))
        if no_key:
            items.append(CheckItem("snapshot keys", False, f"{', '.join(no_key)} has no primary key: a snapshot reads "
                                   "in key order and cannot read it", "add a primary key, or leave the table out of "
                                   "snapshots (`cdc-agent snapshot --table`), or set source.snapshot = \"never\"",
                                   warning=self.cfg.source.snapshot == "never"))
        items.extend(sql.server_checks(db))

    def _server_version(self, db: Db) -> str:
        try:
            return self.sql.server_version(db)
        except Exception:
            return ""
