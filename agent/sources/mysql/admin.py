"""MySQL/MariaDB check / setup / teardown. Binlog capture itself creates nothing in the database; snapshots
need one small signal table for their watermarks (docs/snapshots.md), which `setup` creates and `teardown`
drops. `check` verifies the server settings, grants, replica id, binlog retention, the captured tables and
what snapshots need."""

from __future__ import annotations

import logging
import re

from ...changes import CheckItem, rule_column_checks
from ...config import Config
from ...errors import SourceError, SourceFatal, SpoolError
from ...secrets import redact
from .common import (PURGED_HELP, control_connection, driver_error, parse_checkpoint, parse_dsn, quote,
                     replica_hosts, run_query, server_address, signal_create_sql, signal_drop_sql, signal_ident,
                     signal_table)

log = logging.getLogger(__name__)

MIN_RETENTION_SECONDS = 86400    # check warns when binlogs may be purged sooner than this


class MysqlAdmin:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.dsn = parse_dsn(cfg.source.dsn, str(cfg.path))

    def setup_sql(self) -> list[str]:
        return [signal_create_sql(self.cfg)]

    def setup(self) -> list[str]:
        import pymysql
        db, name = signal_table(self.cfg)
        ctl = control_connection(self.dsn)
        try:
            existed = bool(run_query(ctl, "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND "
                                          "TABLE_NAME = %s", (db, name)))
            if not existed:
                run_query(ctl, signal_create_sql(self.cfg))
        except pymysql.MySQLError as e:
            raise SourceFatal(f"cannot create the snapshot signal table {db}.{name}: {redact(str(e.args[-1]))}; "
                              f"GRANT CREATE, INSERT, UPDATE ON {quote(db)}.{quote(name)} TO '{self.dsn.user}', or "
                              f"let an admin run `cdc-agent setup --dry-run`'s statement") from None
        finally:
            ctl.close()
        return [f"snapshot signal table {db}.{name} {'exists' if existed else 'created'} (snapshot watermarks; "
                f"binlog capture itself needs no objects: `cdc-agent check` verifies the server settings and grants)"]

    def teardown_sql(self) -> list[str]:
        return [signal_drop_sql(self.cfg)]

    def teardown(self) -> list[str]:
        import pymysql
        db, name = signal_table(self.cfg)
        ctl = control_connection(self.dsn)
        try:
            if not run_query(ctl, "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND "
                                  "TABLE_NAME = %s", (db, name)):
                done = f"snapshot signal table {db}.{name} did not exist"
            else:
                # agents may share a signal table (one row each): drop it with the last one
                run_query(ctl, f"DELETE FROM {signal_ident(self.cfg)} WHERE agent = %s", (self.cfg.agent.name,))
                others = run_query(ctl, f"SELECT count(*) FROM {signal_ident(self.cfg)}")[0][0]
                if others:
                    done = f"snapshot signal table {db}.{name} kept: {others} other agent(s) use it"
                else:
                    run_query(ctl, signal_drop_sql(self.cfg))
                    done = f"dropped snapshot signal table {db}.{name}"
        except pymysql.MySQLError as e:
            raise driver_error(e, self.dsn) from None
        finally:
            ctl.close()
        return [done, "binlog capture created nothing else (the replica registration ends when the agent "
                      "disconnects)"]

    def check(self) -> list[CheckItem]:
        d = self.dsn
        items: list[CheckItem] = []
        try:
            ctl = control_connection(d)
        except SourceError as e:
            items.append(CheckItem("connect", False, redact(str(e)),
                                   "check source.dsn (host, port, user, password variable) and that the server "
                                   "accepts connections from this host"))
            return items
        try:
            self._checks(ctl, items)
        except Exception as e:  # the connection died half way: report it, keep what was found
            items.append(CheckItem("server queries", False, redact(str(e)), "see the server's error log"))
        finally:
            ctl.close()
        return items

    def _checks(self, ctl, items: list[CheckItem]) -> None:
        d = self.dsn
        version = run_query(ctl, "SELECT VERSION()")[0][0]
        maria = "mariadb" in version.lower()
        items.append(CheckItem("connect", True, f"{'MariaDB' if maria else 'MySQL'} {version} at {server_address(d)} "
                                                f"as {d.user!r}"))
        nums = tuple(int(x) for x in re.findall(r"\d+", version)[:2])
        need = (10, 5) if maria else (8, 0)
        items.append(CheckItem("server version", nums >= need, version,
                               f"binlog_row_metadata needs {'MariaDB 10.5' if maria else 'MySQL 8.0'} or newer"))
        v = {k.lower(): v for k, v in run_query(ctl, "SHOW GLOBAL VARIABLES WHERE Variable_name IN ("
                                                  "'log_bin', 'binlog_format', 'binlog_row_image', "
                                                  "'binlog_row_metadata', 'server_id', 'expire_logs_days', "
                                                  "'binlog_expire_logs_seconds', 'log_bin_compress', "
                                                  "'binlog_transaction_compression', 'binlog_row_value_options', "
                                                  "'gtid_mode', 'binlog_checksum', 'log_bin_basename')")}

        def setting(name: str, want: str, dynamic: bool = True) -> None:
            val = str(v.get(name, "")).upper()
            ok = val == want.upper()
            fix = ""
            if not ok:
                fix = (f"SET GLOBAL {name} = '{want}';   -- takes effect for new sessions\n" if dynamic else "") + \
                      f"my.cnf, [mysqld] section: {name} = {want}" + ("" if dynamic else "   (needs a restart)")
            items.append(CheckItem(name, ok, f"{name} = {v.get(name, 'not set')}", fix))

        log_bin = str(v.get("log_bin", "")).upper()
        items.append(CheckItem("log_bin", log_bin == "ON", f"log_bin = {v.get('log_bin', 'not set')}",
                               "" if log_bin == "ON" else "my.cnf, [mysqld] section: log_bin = mysql-bin   "
                                                          "(needs a restart)"))
        setting("binlog_format", "ROW")
        setting("binlog_row_image", "FULL")
        setting("binlog_row_metadata", "FULL")
        if str(v.get("log_bin_compress", "OFF")).upper() == "ON":
            items.append(CheckItem("log_bin_compress", True, "log_bin_compress = ON (compressed events are "
                                                             "decompressed by the agent)"))
        if str(v.get("binlog_transaction_compression", "OFF")).upper() == "ON":
            items.append(CheckItem("binlog_transaction_compression", False, "ON: the agent cannot read "
                                   "compressed transaction payloads",
                                   "SET GLOBAL binlog_transaction_compression = OFF;\n"
                                   "my.cnf, [mysqld] section: binlog_transaction_compression = OFF"))
        if "PARTIAL_JSON" in str(v.get("binlog_row_value_options", "")).upper():
            items.append(CheckItem("binlog_row_value_options", False, "PARTIAL_JSON: updates lack full JSON values",
                                   "SET GLOBAL binlog_row_value_options = '';\n"
                                   "my.cnf, [mysqld] section: binlog_row_value_options ="))
        if maria:
            items.append(CheckItem("gtid", True, "MariaDB GTID: checkpoints resume by GTID"))
        else:
            gm = str(v.get("gtid_mode", "OFF")).upper()
            items.append(CheckItem("gtid", True, f"gtid_mode = {gm}: checkpoints resume by binlog file and position"))
        self._privileges(ctl, items, maria)
        self._server_id(ctl, items, v)
        self._retention(ctl, items, v)
        self._tables(ctl, items)
        self._snapshot(ctl, items)

    def _privileges(self, ctl, items: list[CheckItem], maria: bool) -> None:
        try:
            grants = " ".join(r[0] for r in run_query(ctl, "SHOW GRANTS FOR CURRENT_USER()")).upper()
        except Exception as e:
            items.append(CheckItem("privileges", False, f"cannot read grants: {redact(str(e))}", ""))
            return
        # global grants only ("ON *.*"); ALL PRIVILEGES covers everything
        glob = {p.strip() for g in re.findall(r"GRANT (.+?) ON \*\.\* TO", grants) for p in g.split(",")}
        all_priv = "ALL PRIVILEGES" in glob
        user = self.dsn.user
        need = [("REPLICATION SLAVE", ("REPLICATION SLAVE", "REPLICATION REPLICA")),
                ("REPLICATION CLIENT" if not maria else "BINLOG MONITOR",
                 ("REPLICATION CLIENT", "BINLOG MONITOR", "SUPER"))]
        for name, accepted in need:
            ok = all_priv or any(a in glob for a in accepted)
            items.append(CheckItem(f"privilege {name}", ok,
                                   "granted" if ok else f"not granted to {user!r} (SHOW GRANTS)",
                                   "" if ok else f"GRANT {name} ON *.* TO '{user}'@'%';   (as an admin; if it comes "
                                                 f"through a role, make that role the user's default role)"))

    def _server_id(self, ctl, items: list[CheckItem], v: dict) -> None:
        sid = self.cfg.source.server_id
        own = int(v.get("server_id", 0) or 0)
        if own == sid:
            items.append(CheckItem("server_id", False, f"source.server_id {sid} is the database server's own id",
                                   "set source.server_id in agent.toml to a number no server or replica uses"))
            return
        try:
            hosts = replica_hosts(ctl)
        except Exception as e:
            items.append(CheckItem("server_id", False, f"{sid}: cannot tell whether another replica uses it "
                                                       f"(SHOW SLAVE HOSTS: {redact(str(e))})",
                                   "make sure no other replica uses it (an admin can run SHOW SLAVE HOSTS), or "
                                   "GRANT REPLICATION MASTER ADMIN (MariaDB) to the agent's user so check can see",
                                   warning=True))
            return
        ours = f"cdc-agent:{self.cfg.agent.name}"
        for row in hosts:
            if int(row[0]) == sid:
                host = str(row[1])
                if host == ours[:60]:
                    items.append(CheckItem("server_id", True, f"{sid} is in use by this agent (running now)"))
                else:
                    items.append(CheckItem("server_id", False, f"{sid} is already used by replica {host!r}; two "
                                           f"replicas with one server_id disconnect each other",
                                           "set source.server_id in agent.toml to an unused number "
                                           "(SHOW SLAVE HOSTS lists the ones in use)"))
                return
        items.append(CheckItem("server_id", True, f"{sid} is not used by another replica"))

    def _retention(self, ctl, items: list[CheckItem], v: dict) -> None:
        secs = 0.0
        try:
            secs = float(v.get("binlog_expire_logs_seconds") or 0)
        except ValueError:
            pass
        if not secs:
            try:
                secs = float(v.get("expire_logs_days") or 0) * 86400
            except ValueError:
                pass
        fix = ("SET GLOBAL binlog_expire_logs_seconds = 604800;   -- 7 days\n"
               "my.cnf, [mysqld] section: binlog_expire_logs_seconds = 604800")
        if not secs:
            items.append(CheckItem("binlog retention", True, "binlogs are never purged automatically (watch the disk)"))
        elif secs < MIN_RETENTION_SECONDS:
            items.append(CheckItem("binlog retention", False,
                                   f"binlogs are purged after {secs / 3600:.1f} h: an agent stopped longer loses "
                                   f"its position and needs a re-snapshot", fix, warning=True))
        else:
            items.append(CheckItem("binlog retention", True, f"binlogs are kept {secs / 86400:.1f} days: the agent may "
                                                             f"be stopped that long without losing its position"))
        # the spooled checkpoint, if any, must still be on the server
        import sqlite3

        import pymysql

        from ...spool import Spool
        ckpt = None
        try:
            if (self.cfg.agent.state_dir / "spool.db").exists():
                spool = Spool(self.cfg.agent.state_dir, readonly=True)
                try:
                    ckpt = spool.checkpoint()
                finally:
                    spool.close()
        except (SpoolError, sqlite3.Error):
            pass                                         # a spool being created, or unreadable: nothing to compare
        if not ckpt:
            return
        try:
            file = parse_checkpoint(ckpt)["file"]
            logs = [r[0] for r in run_query(ctl, "SHOW BINARY LOGS")]
        except SourceFatal as e:             # not a MySQL checkpoint: the source kind changed under this state_dir
            items.append(CheckItem("checkpoint binlog", False, str(e), "reset the agent's state_dir"))
            return
        except pymysql.MySQLError as e:
            items.append(CheckItem("checkpoint binlog", False, f"cannot list the binary logs: {redact(str(e))}",
                                   f"GRANT REPLICATION CLIENT ON *.* TO '{self.dsn.user}'@'%'"))
            return
        ok = file in logs
        items.append(CheckItem("checkpoint binlog", ok,
                               f"the agent resumes in {file}, " + ("which the server still has" if ok else
                               f"which the server no longer has (oldest: {logs[0] if logs else '-'})"),
                               "" if ok else PURGED_HELP))

    def _tables(self, ctl, items: list[CheckItem]) -> None:
        rules_with_key = {r.table for r in self.cfg.events if r.key}
        for t in self.cfg.source.tables:
            schema, table = t.split(".", 1)
            rows = run_query(ctl, "SELECT ENGINE FROM information_schema.TABLES "
                                  "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s", (schema, table))
            if not rows:
                items.append(CheckItem(f"table {t}", False, "does not exist (or the user cannot see it)",
                                       f"create it, fix source.tables, or GRANT SELECT ON {schema}.{table} TO "
                                       f"'{self.dsn.user}'@'%'"))
                continue
            try:
                run_query(ctl, f"SELECT 1 FROM `{schema.replace('`', '``')}`.`{table.replace('`', '``')}` LIMIT 0")
            except Exception as e:
                items.append(CheckItem(f"table {t}", False, f"cannot SELECT: {redact(str(e))}",
                                       f"GRANT SELECT ON `{schema}`.`{table}` TO '{self.dsn.user}'@'%'"))
                continue
            pk = run_query(ctl, "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s "
                             "AND TABLE_NAME = %s AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX", (schema, table))
            if pk:
                items.append(CheckItem(f"table {t}", True, f"primary key ({', '.join(r[0] for r in pk)}), "
                                                           f"engine {rows[0][0]}"))
            else:
                ok = t in rules_with_key
                items.append(CheckItem(f"table {t}", ok,
                                       "has no primary key" + (" (rules name their key)" if ok else ""),
                                       f"ALTER TABLE `{schema}`.`{table}` ADD PRIMARY KEY (...), or set key = [...] "
                                       f"in the [[events]] rules for it", warning=not ok))
            cols = run_query(ctl, "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s "
                                  "AND TABLE_NAME = %s", (schema, table))
            items.extend(rule_column_checks(self.cfg.events, t, [r[0] for r in cols], str(self.cfg.path)))

    def _snapshot(self, ctl, items: list[CheckItem]) -> None:
        """What snapshots need (docs/snapshots.md): the signal table and INSERT + UPDATE on it (CREATE to make
        it), and SELECT plus a primary key on each captured table (the table items above check those)."""
        import pymysql
        db, name = signal_table(self.cfg)
        user = self.dsn.user
        grant = f"GRANT CREATE, INSERT, UPDATE ON {quote(db)}.{quote(name)} TO '{user}'@'%';"
        never = self.cfg.source.snapshot == "never"      # then only `cdc-agent snapshot` needs it
        label = "snapshot signal table"
        exists = run_query(ctl, "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                           (db, name))
        if exists:
            try:
                # privilege checks that write nothing
                run_query(ctl, f"INSERT INTO {signal_ident(self.cfg)} (agent, mark) SELECT 'probe', '' FROM DUAL "
                               f"WHERE 1 = 0")
                run_query(ctl, f"UPDATE {signal_ident(self.cfg)} SET mark = mark WHERE 1 = 0")
                items.append(CheckItem(label, True, f"{db}.{name} exists and the agent may write it (watermarks)"))
            except pymysql.MySQLError as e:
                items.append(CheckItem(label, False, f"{db}.{name}: the agent cannot write it: "
                                                     f"{redact(str(e.args[-1]))}", grant, warning=never))
        elif self._may_create(ctl, db, name):
            items.append(CheckItem(label, True, f"{db}.{name} does not exist yet: `cdc-agent setup` (or `run`) creates "
                                                f"it (the agent's user may)"))
        else:
            items.append(CheckItem(label, False, f"{db}.{name} does not exist and the agent's user may not create it: "
                                                 f"snapshots write their watermarks there",
                                   f"{grant}\nor as an admin: {signal_create_sql(self.cfg)};\n"
                                   f"GRANT INSERT, UPDATE ON {quote(db)}.{quote(name)} TO '{user}'@'%';"
                                   + ("" if never else '\nor set source.snapshot = "never"'), warning=never))
        no_key = []
        for t in self.cfg.source.tables:
            schema, table = t.split(".", 1)
            if run_query(ctl, "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                         (schema, table)) and not run_query(
                    ctl, "SELECT 1 FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
                         "AND INDEX_NAME = 'PRIMARY'", (schema, table)):
                no_key.append(t)
        if no_key:
            items.append(CheckItem(
                "snapshot keys", False, f"{', '.join(no_key)} has no primary key: a snapshot reads in key order and "
                "cannot read it", "add a primary key (ALTER TABLE ... ADD PRIMARY KEY), or leave the table out of "
                "snapshots (`cdc-agent snapshot --table`), or set source.snapshot = \"never\"", warning=never))

    def _may_create(self, ctl, db: str, name: str) -> bool:
        """CREATE granted on *.*, on the database or on the table (SHOW GRANTS of the session's user)."""
        try:
            grants = [r[0] for r in run_query(ctl, "SHOW GRANTS")]
        except Exception:
            return False
        for g in grants:
            m = re.match(r"GRANT (.+?) ON (\S+) TO ", g)
            if not m:
                continue
            privs = {p.strip().upper() for p in m.group(1).split(",")}
            if not privs & {"ALL PRIVILEGES", "ALL", "CREATE"}:
                continue
            scope = m.group(2)
            sdb, _, stable = scope.partition(".")
            sdb, stable = sdb.strip("`").replace("``", "`"), stable.strip("`").replace("``", "`")
            if scope == "*.*" or (_like(sdb, db) and stable in ("*", name)):
                return True
        return False


def _like(pattern: str, value: str) -> bool:
    """A database name pattern of a GRANT (`%`, `_`, `\\_` for a literal underscore) matches value."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
        i += 1
    return re.fullmatch("".join(out), value) is not None
