"""MySQL/MariaDB check / setup / teardown. Binlog capture creates nothing in the database; `check` verifies
the server settings, grants, replica id, binlog retention and the captured tables."""

from __future__ import annotations

import logging
import re

from ...changes import CheckItem, rule_column_checks
from ...config import Config
from ...errors import SourceError, SourceFatal, SpoolError
from ...secrets import redact
from .common import (PURGED_HELP, control_connection, parse_checkpoint, parse_dsn, replica_hosts, run_query,
                     server_address)

log = logging.getLogger(__name__)

MIN_RETENTION_SECONDS = 86400    # check warns when binlogs may be purged sooner than this


class MysqlAdmin:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.dsn = parse_dsn(cfg.source.dsn, str(cfg.path))

    def setup_sql(self) -> list[str]:
        return []

    def setup(self) -> list[str]:
        return ["binlog capture needs no objects in the database: nothing to create "
                "(`cdc-agent check` verifies the server settings and grants)"]

    def teardown_sql(self) -> list[str]:
        return []

    def teardown(self) -> list[str]:
        return ["binlog capture created no objects in the database: nothing to remove "
                "(the replica registration ends when the agent disconnects)"]

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
