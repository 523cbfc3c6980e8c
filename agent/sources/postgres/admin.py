"""PostgreSQL check / setup / teardown: the publication and the logical replication slot capture needs,
and the preflight checklist (`cdc-agent check`)."""

from __future__ import annotations

import logging
import time

import psycopg
from psycopg import errors as pgerr
from psycopg import pq

from ... import pgvalues
from ...changes import CheckItem, rule_column_checks
from ...config import Config
from ...errors import CdcError, SourceFatal
from ...secrets import redact
from ...twoway import owned_tables
from .common import conninfo, ident, literal, table_ident, translate

log = logging.getLogger(__name__)


class PostgresAdmin:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        s = cfg.source
        self.slot, self.publication, self.tables = s.slot, s.publication, s.tables

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(conninfo(self.cfg), autocommit=True)
        except psycopg.Error as e:
            raise translate(e, "cannot connect to PostgreSQL") from None

    # -- what exists

    def position_lost(self, checkpoint: str) -> str | None:
        """At start, before `run` creates what is missing: a checkpoint read from a slot that no longer
        exists means the changes since then are gone from the log (creating the slot again would hide it)."""
        conn = self._connect()
        try:
            if conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)).fetchone():
                return None
        except psycopg.Error as e:
            raise translate(e, "cannot look for the replication slot") from None
        finally:
            conn.close()
        return (f'replication slot "{self.slot}" does not exist, and the spool\'s checkpoint {checkpoint} was read '
                f'from it: changes since then are gone from the log; run `cdc-agent setup -c {self.cfg.path}` to '
                f'capture from now on, or set source.snapshot = "when_needed" to snapshot again')

    def _state(self, conn) -> dict:
        slot = conn.execute("SELECT plugin, database, active_pid FROM pg_replication_slots WHERE slot_name = %s",
                            (self.slot,)).fetchone()
        pub = conn.execute("SELECT oid, puballtables FROM pg_publication WHERE pubname = %s",
                           (self.publication,)).fetchone()
        pub_tables = None
        if pub is not None:
            pub_tables = {f"{s}.{t}" for s, t in conn.execute(
                "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s", (self.publication,))}
        return {"slot": slot, "pub": pub, "pub_tables": pub_tables,
                "db": conn.execute("SELECT current_database()").fetchone()[0]}

    def _tables_info(self, conn) -> dict[str, dict]:
        """Per configured table: exists, has a primary key, replica identity, whether we own it, its columns."""
        out: dict[str, dict] = {}
        for t in self.tables:
            schema, _, name = t.partition(".")
            row = conn.execute(
                "SELECT c.oid, c.relreplident, c.relkind, "
                "  EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary), "
                "  EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident), "
                "  pg_has_role(c.relowner, 'USAGE') "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s", (schema, name)).fetchone()
            if row is None:
                out[t] = {"exists": False}
            else:
                oid, replident, kind, pk, ident_index, owner = row
                cols = [c for (c,) in conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s "
                                                   "AND attnum > 0 AND NOT attisdropped", (oid,))]
                out[t] = {"exists": True, "kind": kind, "pk": pk, "identity": replident, "ident_index": ident_index,
                          "owner": owner, "columns": cols}
        return out

    def _unsafe_tables(self, info: dict[str, dict]) -> list[str]:
        """Tables whose UPDATE/DELETE would start failing once published: no replica identity."""
        bad = []
        for t, i in info.items():
            if not i.get("exists"):
                continue
            replident = i["identity"]
            if replident == "n" or (replident == "d" and not i["pk"]) or (replident == "i" and not i["ident_index"]):
                bad.append(t)
        return bad

    def _pub_sql(self, state: dict | None) -> str | None:
        tables = ", ".join(table_ident(t) for t in self.tables)
        if state is None or state["pub"] is None:
            return f"CREATE PUBLICATION {ident(self.publication)} FOR TABLE {tables}"
        if state["pub"][1]:                 # FOR ALL TABLES: covers ours already
            return None
        if state["pub_tables"] != set(self.tables):
            return f"ALTER PUBLICATION {ident(self.publication)} SET TABLE {tables}"
        return None

    def _slot_sql(self) -> str:
        return f"SELECT pg_create_logical_replication_slot({literal(self.slot)}, 'pgoutput')"

    # -- setup / teardown

    def setup_sql(self) -> list[str]:
        try:
            conn = self._connect()
        except CdcError:
            # no server to ask: everything a first setup would run
            create_pub = self._pub_sql(None)
            assert create_pub is not None        # without a state: always CREATE PUBLICATION
            return [create_pub, self._slot_sql()]
        with conn:
            st = self._state(conn)
            stmts = []
            info = self._tables_info(conn)
            for t in self._unsafe_tables(info):
                stmts.append(f"-- {t} has no replica identity (no primary key): publishing it would make its UPDATEs "
                             f"and DELETEs fail; first: ALTER TABLE {table_ident(t)} REPLICA IDENTITY FULL")
            pub = self._pub_sql(st)
            if pub:
                stmts.append(pub)
            if st["slot"] is None:
                stmts.append(self._slot_sql())
            return stmts

    def setup(self) -> list[str]:
        done = []
        with self._connect() as conn:
            st = self._state(conn)
            info = self._tables_info(conn)
            missing = [t for t, i in info.items() if not i["exists"]]
            if missing:
                raise SourceFatal(f"table(s) {', '.join(missing)} do not exist: create them or remove them from "
                                  f"source.tables")
            unsafe = self._unsafe_tables(info)
            if unsafe:
                raise SourceFatal(
                    f"table(s) {', '.join(unsafe)} have no replica identity (no primary key): publishing them would "
                    f"make their UPDATEs and DELETEs fail. Fix first: " +
                    " ".join(f"ALTER TABLE {table_ident(t)} REPLICA IDENTITY FULL;" for t in unsafe))
            pub = self._pub_sql(st)
            try:
                if pub:
                    conn.execute(pub)
                    done.append(f"{'created' if pub.startswith('CREATE') else 'changed'} publication "
                                f"{self.publication} for {len(self.tables)} table(s)")
                else:
                    done.append(f"publication {self.publication} exists and covers the tables")
                if st["slot"] is None:
                    try:
                        lsn = conn.execute(self._slot_sql()).fetchone()
                        row = conn.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                                           "WHERE slot_name = %s", (self.slot,)).fetchone()
                        done.append(f"created replication slot {self.slot} (pgoutput) at {row[0] if row else lsn}")
                    except pgerr.DuplicateObject:
                        done.append(f"replication slot {self.slot} exists")
                else:
                    plugin, database, _ = st["slot"]
                    if plugin != "pgoutput" or database != st["db"]:
                        raise SourceFatal(f'replication slot "{self.slot}" exists for database {database!r} with '
                                          f'plugin {plugin!r}: choose another source.slot name')
                    done.append(f"replication slot {self.slot} exists")
            except psycopg.Error as e:
                err = translate(e, "setup failed")
                if isinstance(e, pgerr.InsufficientPrivilege):
                    err = SourceFatal(f"{err}; what is left can be run by the tables' owner or a superuser: "
                                      f"`cdc-agent setup --dry-run -c {self.cfg.path}` prints it"
                                      + (f" (done so far: {'; '.join(done)})" if done else ""))
                raise err from None
        return done

    def teardown_sql(self) -> list[str]:
        return [f"SELECT pg_drop_replication_slot({literal(self.slot)}) FROM pg_replication_slots "
                f"WHERE slot_name = {literal(self.slot)}",
                f"DROP PUBLICATION IF EXISTS {ident(self.publication)}"]

    def teardown(self) -> list[str]:
        done = []
        with self._connect() as conn:
            try:
                # a just-stopped agent's walsender may take a moment to go away
                for _attempt in range(30):
                    row = conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                                       (self.slot,)).fetchone()
                    if row is None or row[0] is None:
                        break
                    time.sleep(0.1)
                if row is None:
                    done.append(f"replication slot {self.slot} did not exist")
                elif row[0] is not None:
                    raise SourceFatal(f'replication slot "{self.slot}" is in use by server process {row[0]} (a running '
                                      f'agent?): stop the agent first, then run teardown again')
                else:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))
                    done.append(f"dropped replication slot {self.slot}")
                exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (self.publication,)).fetchone()
                try:
                    conn.execute(f"DROP PUBLICATION IF EXISTS {ident(self.publication)}")
                except pgerr.InsufficientPrivilege:
                    raise SourceFatal(f"{'; '.join(done)}; but publication {self.publication} belongs to another "
                                      f"role: as its owner run DROP PUBLICATION {ident(self.publication)};") from None
                done.append(f"dropped publication {self.publication}" if exists
                            else f"publication {self.publication} did not exist")
            except psycopg.Error as e:
                raise translate(e, "teardown failed") from None
        return done

    # -- check

    def check(self) -> list[CheckItem]:
        items: list[CheckItem] = []
        try:
            conn = self._connect()
        except CdcError as e:
            items.append(CheckItem("connect", False, str(e),
                                   "check source.dsn (host, port, database, user, the password variable), that the "
                                   "server runs, and that pg_hba.conf lets this user connect from this host"))
            return items
        with conn:
            try:
                self._snapshot_items: list[CheckItem] = []
                self._checks(conn, items)
                items.extend(self._snapshot_items)
            except psycopg.Error as e:          # the connection died half way: report it, keep what was found
                items.append(CheckItem("server queries", False, redact(str(e)), "see the server's log"))
        return items

    def _checks(self, conn, items: list[CheckItem]) -> None:
        ver = conn.info.server_version
        user, db = conn.execute("SELECT current_user, current_database()").fetchone()
        items.append(CheckItem("connect", True, f"PostgreSQL {ver // 10000}.{ver % 10000} database {db!r} as {user!r}"))
        items.append(CheckItem("server version", ver >= 100000, f"{ver // 10000}",
                               "logical decoding with pgoutput needs PostgreSQL 10 or newer"))
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('wal_level', 'max_replication_slots', "
            "'max_wal_senders')").fetchall())
        wal_level = settings.get("wal_level")
        items.append(CheckItem("wal_level", wal_level == "logical", f"wal_level = {wal_level}",
                               "ALTER SYSTEM SET wal_level = logical;\nthen restart PostgreSQL "
                               "(e.g. systemctl restart postgresql)"))
        sup, repl = conn.execute("SELECT rolsuper, rolreplication FROM pg_roles "
                                 "WHERE rolname = current_user").fetchone()
        items.append(CheckItem("replication privilege", sup or repl,
                               "superuser" if sup else ("REPLICATION" if repl else f"role {user!r} lacks REPLICATION"),
                               f"ALTER ROLE {ident(user)} REPLICATION;"))
        st = self._state(conn)
        used_slots = conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone()[0]
        max_slots = int(settings.get("max_replication_slots") or 0)
        need = 0 if st["slot"] is not None else 1
        items.append(CheckItem("max_replication_slots", used_slots + need <= max_slots,
                               f"{used_slots} of {max_slots} in use",
                               f"ALTER SYSTEM SET max_replication_slots = {max(max_slots + 4, used_slots + 4)};\n"
                               f"then restart PostgreSQL"))
        senders = conn.execute("SELECT count(*) FROM pg_stat_replication").fetchone()[0]
        max_senders = int(settings.get("max_wal_senders") or 0)
        items.append(CheckItem("max_wal_senders", senders + 1 <= max_senders,
                               f"{senders} of {max_senders} in use",
                               f"ALTER SYSTEM SET max_wal_senders = {max(max_senders + 4, senders + 4)};\n"
                               f"then restart PostgreSQL"))
        if wal_level == "logical" and (sup or repl):
            items.append(self._check_replication_connection())

        info = self._tables_info(conn)
        changed_rules: dict[str, list[str]] = {}
        update_rules: dict[str, list[str]] = {}
        for r in self.cfg.events:
            if r.changed:
                changed_rules.setdefault(r.table, []).append(r.type)
            if "update" in r.on or "delete" in r.on:
                update_rules.setdefault(r.table, []).append(r.type)
        not_owned: list[str] = []
        owned = owned_tables(self.cfg)
        for t in self.tables:
            i = info[t]
            if not i["exists"]:
                items.append(CheckItem(f"table {t}", False, "does not exist (or this role cannot see it)",
                                       f"create it, or remove {t!r} from source.tables in {self.cfg.path}"))
                continue
            if i["kind"] not in ("r", "p"):
                items.append(CheckItem(f"table {t}", False, "is not a table (a view or another kind of relation)",
                                       f"remove {t!r} from source.tables; capture reads tables"))
                continue
            items.append(CheckItem(f"table {t}", True, "exists"))
            items.extend(rule_column_checks(self.cfg.events, t, i["columns"], str(self.cfg.path)))
            if i["pk"]:
                items.append(CheckItem(f"primary key {t}", True, "present"))
            else:
                items.append(CheckItem(f"primary key {t}", False,
                                       "none: events have no key and subject unless each rule names `key`",
                                       f"ALTER TABLE {table_ident(t)} ADD PRIMARY KEY (...);"))
            replident = i["identity"]
            full_fix = f"ALTER TABLE {table_ident(t)} REPLICA IDENTITY FULL;"
            if t in self._unsafe_tables({t: i}):
                items.append(CheckItem(f"replica identity {t}", False,
                                       "none usable: once published, UPDATE and DELETE on it fail", full_fix))
            elif replident == "f":
                items.append(CheckItem(f"replica identity {t}", True, "FULL (old row images in the log)"))
            elif t in owned:
                items.append(CheckItem(f"replica identity {t}", False,
                                       f"{'DEFAULT' if replident == 'd' else 'USING INDEX'}: no old row image, but "
                                       f"sql target(s) {', '.join(owned[t])} own columns of it (`owns`): conflict "
                                       f"detection compares the replica with the change's `before` "
                                       f"(docs/two-way-sync.md)", full_fix))
            elif t in changed_rules:
                items.append(CheckItem(f"replica identity {t}", False,
                                       f"{'DEFAULT' if replident == 'd' else 'USING INDEX'}: no old row image, "
                                       f"so rules with `changed` ({', '.join(changed_rules[t])}) cannot tell what "
                                       f"changed (they fire on every update)", full_fix))
            else:
                items.append(CheckItem(f"replica identity {t}", False,
                                       f"{'DEFAULT' if replident == 'd' else 'USING INDEX'}: update events carry no "
                                       f"`before` and unchanged large (TOASTed) values are left out",
                                       full_fix, warning=True))
            if not i["owner"] and not sup:
                not_owned.append(t)
        generated = pgvalues.stored_generated_columns(conn.execute(pgvalues.STORED_GENERATED_SQL).fetchall(),
                                                      self.tables)
        if generated:
            items.append(CheckItem("generated columns", False, pgvalues.stored_generated_detail(generated),
                                   "compute them from the other columns downstream, or capture those tables with "
                                   "source kind \"trigger\" (docs/postgres-source.md)", warning=True))

        pub_sql = self._pub_sql(st)
        can_publish = not not_owned
        if st["pub"] is None:
            items.append(CheckItem("publication", can_publish,
                                   f"{self.publication} missing: `cdc-agent setup` creates it" if can_publish else
                                   f"{self.publication} missing, and this role cannot create it (it does not own "
                                   f"{', '.join(not_owned)})", f"as the tables' owner: {pub_sql};"))
        elif pub_sql:
            items.append(CheckItem("publication", can_publish, f"{self.publication} covers other tables: "
                                   f"`cdc-agent setup` changes it", f"as the tables' owner: {pub_sql};"))
        else:
            items.append(CheckItem("publication", True, f"{self.publication} covers the tables"))
        if st["slot"] is None:
            items.append(CheckItem("replication slot", bool(sup or repl),
                                   f"{self.slot} missing: `cdc-agent setup` creates it",
                                   f"{self._slot_sql()};"))
        else:
            plugin, database, active = st["slot"]
            ok = plugin == "pgoutput" and database == st["db"]
            items.append(CheckItem("replication slot", ok,
                                   f"{self.slot} exists" + (f" (in use by server process {active})" if active else "")
                                   if ok else f"{self.slot} belongs to database {database!r} with plugin {plugin!r}",
                                   "choose another source.slot name"))
        if self.cfg.source.heartbeat_seconds > 0:
            ok = conn.execute("SELECT has_function_privilege('pg_logical_emit_message(boolean,text,text)', "
                              "'EXECUTE')").fetchone()[0]
            items.append(CheckItem("heartbeat", ok, "may write logical messages" if ok else
                                   "cannot call pg_logical_emit_message: an idle database's slot may not advance",
                                   f"GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO "
                                   f"{ident(user)};", warning=not ok))
        self._check_snapshot(conn, user, ver, info)

    def _check_snapshot(self, conn, user: str, ver: int, info: dict) -> None:
        """Snapshots (docs/snapshots.md): watermarks are transactional logical messages, chunks are SELECTs."""
        if self.cfg.source.snapshot == "never":
            return
        ok = conn.execute("SELECT has_function_privilege('pg_logical_emit_message(boolean,text,text)', "
                          "'EXECUTE')").fetchone()[0]
        detail = "watermarks as logical messages (no signal table)"
        if ver < 140000:
            ok, detail = False, "PostgreSQL 14+ is needed: older pgoutput does not send logical messages"
        elif not ok:
            detail = "cannot call pg_logical_emit_message, which snapshot watermarks need"
        items_fix = (f"GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO {ident(user)};"
                     f"\nor set source.snapshot = \"never\"")
        no_key = [t for t in self.tables if info[t].get("exists") and not info[t].get("pk")]
        self._snapshot_items = [CheckItem("snapshot watermarks", ok, detail, items_fix)]
        if no_key:
            self._snapshot_items.append(CheckItem(
                "snapshot keys", False, f"{', '.join(no_key)} has no primary key: a snapshot reads in key order and "
                "cannot read it", "add a primary key, or leave the table out of snapshots (`cdc-agent snapshot "
                "--table`), or set source.snapshot = \"never\""))

    def _check_replication_connection(self) -> CheckItem:
        try:
            with psycopg.connect(conninfo(self.cfg, replication=True), autocommit=True) as rc:
                rc.pgconn.send_query(b"IDENTIFY_SYSTEM")
                res = rc.pgconn.get_result()
                while rc.pgconn.get_result() is not None:
                    pass
                if res is None or res.status != pq.ExecStatus.TUPLES_OK:
                    msg = (res.error_message if res is not None else b"").decode(errors="replace")
                    return CheckItem("replication connection", False, redact(msg.strip()),
                                     "allow replication connections for this user in pg_hba.conf")
        except psycopg.Error as e:
            return CheckItem("replication connection", False, redact(str(e).strip()),
                             "pg_hba.conf must let this user connect to this database from this host "
                             "(replication=database connections match ordinary database lines)")
        return CheckItem("replication connection", True, "accepted")
