"""`cdc-agent connect ...` (CONTRACT §8): the agent's capture as a Debezium connector on Kafka Connect.

`plan` derives the connector config from `[source]` (and says which `[[events]]` rules Debezium cannot
express); `deploy` PUTs it (idempotent); `status`, `pause`, `resume`, `restart`, `delete` manage it; the
position moves both ways through the offsets API (Kafka 3.6+, KIP-875): `deploy --handoff` starts the
connector where the agent's checkpoint stands, `handback` gives the connector's position to the agent.
The offset shapes are the ones Debezium's own FileOffsetBackingStore holds (checked against real Debezium
in tests/test_connect.py). Every failure from Connect is one line with its own message.
"""

from __future__ import annotations

import json
import re
import time
import tomllib
from urllib.parse import urlsplit

import httpx

from .config import Config
from .config_reader import ENV_RE
from .errors import CdcError, ConfigError

CONNECTOR_CLASS = {"postgres": "io.debezium.connector.postgresql.PostgresConnector",
                   "mysql": "io.debezium.connector.mysql.MySqlConnector"}
STOP_WAIT_SECONDS = 60.0


class ConnectError(CdcError):
    """Kafka Connect refused or failed a request: one line, with Connect's own message."""


# ---------------------------------------------------------------- the plan

def _raw_dsn(cfg: Config) -> str:
    """The DSN as written in agent.toml (with its ${NAME} references, not the secrets they stand for)."""
    try:
        return tomllib.loads(cfg.path.read_text(encoding="utf-8"))["source"]["dsn"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return cfg.source.dsn


def password_reference(cfg: Config) -> str | None:
    """The connector's `database.password`: a Connect config-provider reference to the variable the agent
    reads its password from, never the password itself."""
    raw = _raw_dsn(cfg)
    if "://" in raw:
        pw = urlsplit(raw).password
    else:
        m = re.search(r"(?i)\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", raw)
        pw = m.group(1).strip("'") if m else None
    if not pw:
        return None
    m = ENV_RE.fullmatch(pw)
    if not m:
        raise ConfigError(str(cfg.path), "source.dsn", "the password must be a ${NAME} reference for `connect`: "
                          "the connector reads the same variable through a Connect config provider")
    provider = cfg.connect.secrets if cfg.connect else "env"
    return f"${{env:{m[1]}}}" if provider == "env" else f"${{{provider}:{m[1]}}}"


def _endpoint(cfg: Config) -> dict[str, str]:
    if cfg.source.kind == "postgres":
        from psycopg.conninfo import conninfo_to_dict
        p = conninfo_to_dict(cfg.source.dsn)
        return {"database.hostname": str(p.get("host", "localhost")), "database.port": str(p.get("port", 5432)),
                "database.user": str(p.get("user", "postgres")), "database.dbname": str(p.get("dbname", ""))}
    from .sources.mysql.common import parse_dsn
    d = parse_dsn(cfg.source.dsn, str(cfg.path))
    return {"database.hostname": d.host, "database.port": str(d.port), "database.user": d.user}


def _include_list(names) -> str:
    return ",".join(re.escape(n) for n in names)


def plan(cfg: Config, *, has_checkpoint: bool = False) -> tuple[dict[str, str], list[str]]:
    """(connector config, what it cannot express). `has_checkpoint`: the agent has captured already, so
    the connector must not snapshot the tables again (the position moves with `deploy --handoff`)."""
    kind = cfg.source.kind
    if kind not in CONNECTOR_CLASS:
        raise ConfigError(str(cfg.path), "source.kind", f"`connect` supports postgres and mysql sources, not {kind}")
    c: dict[str, str] = {"connector.class": CONNECTOR_CLASS[kind], "tasks.max": "1", **_endpoint(cfg)}
    pw = password_reference(cfg)
    if pw:
        c["database.password"] = pw
    c["topic.prefix"] = cfg.agent.name
    c["table.include.list"] = _include_list(cfg.source.tables)
    if kind == "postgres":
        # the agent's own slot and publication (made by `cdc-agent setup`): the WAL the agent has not
        # confirmed stays for the connector, and no second slot holds WAL back
        c.update({"plugin.name": "pgoutput", "slot.name": cfg.source.slot,
                  "publication.name": cfg.source.publication, "publication.autocreate.mode": "disabled"})
    else:
        c.update({"database.server.id": str(cfg.source.server_id),
                  "database.include.list": _include_list(sorted({t.split(".", 1)[0] for t in cfg.source.tables})),
                  "schema.history.internal.kafka.topic": f"{cfg.agent.name}.schema-history",
                  "include.schema.changes": "false"})
    if kind == "postgres" and cfg.source.heartbeat_seconds:
        c["heartbeat.interval.ms"] = str(int(cfg.source.heartbeat_seconds * 1000))
    c["snapshot.mode"] = "no_data" if has_checkpoint else "initial"
    # what `format = "debezium"` renders: the JSON converter without schemas, decimals as strings
    c.update({"key.converter": "org.apache.kafka.connect.json.JsonConverter", "key.converter.schemas.enable": "false",
              "value.converter": "org.apache.kafka.connect.json.JsonConverter",
              "value.converter.schemas.enable": "false", "decimal.handling.mode": "string"})
    notes = _not_expressed(cfg, c)
    if kind == "mysql" and "schema.history.internal.kafka.bootstrap.servers" not in (cfg.connect.options
                                                                                       if cfg.connect else {}):
        notes.append("schema.history.internal.kafka.bootstrap.servers: the Kafka cluster for the schema history "
                     "topic is not known to the agent; set it in [connect] options")
    if cfg.connect:
        c.update(cfg.connect.options)
    return c, notes


def _not_expressed(cfg: Config, c: dict[str, str]) -> list[str]:
    notes = []
    keys: list[str] = []
    for i, r in enumerate(cfg.events):
        where = f"events[{i}] ({r.type} on {r.table})"
        notes.append(f"{where}: Debezium has no event types; its records go to topic "
                     f"{cfg.agent.name}.{r.table} with op c/u/d/r")
        if r.on != frozenset({"insert", "update", "delete"}):
            notes.append(f"{where}: on = {sorted(r.on)} is not expressed (skipped.operations is connector-wide)")
        if r.changed is not None:
            notes.append(f"{where}: changed = {list(r.changed)} is not expressed: Debezium emits every update")
        if r.fields is not None:
            if any(out != col for out, col in r.fields):
                notes.append(f"{where}: field renames are not expressed: Debezium keeps column names")
            notes.append(f"{where}: fields (a subset of columns) are not expressed per rule: column.include.list "
                         "would apply to every consumer of the table")
        if r.values:
            notes.append(f"{where}: values mappings ({', '.join(sorted(r.values))}) are not expressed: Debezium "
                         "sends the raw codes")
        if r.key is not None:
            keys.append(f"{r.table}:{','.join(r.key)}")
    if keys:
        c["message.key.columns"] = ";".join(dict.fromkeys(keys))
    return notes


# ---------------------------------------------------------------- offsets (the hand-off)

def partition(cfg: Config) -> dict:
    return {"server": cfg.agent.name}


def offset_from_checkpoint(cfg: Config, checkpoint: str) -> dict:
    """The agent's checkpoint as Debezium's source offset: the connector resumes exactly after the last
    transaction the agent has spooled."""
    if cfg.source.kind == "postgres":
        from .sources.debezium.engine import resume_offset
        lsn = int(checkpoint, 16)
        # lsn_commit at the checkpoint: Debezium skips the transactions committed at or before it; lsn_proc
        # off every record start, so it resumes at the next one's BEGIN (resume_offset says why)
        return resume_offset({"lsn_proc": lsn, "lsn_commit": lsn, "lsn": lsn, "ts_usec": time.time_ns() // 1000})
    from .sources.mysql.common import parse_checkpoint
    cp = parse_checkpoint(checkpoint)
    return {"file": cp["file"], "pos": int(cp["pos"])}


def checkpoint_from_offset(cfg: Config, offset: dict) -> str:
    """Debezium's source offset as the agent's checkpoint (at-least-once: a transaction Debezium was in the
    middle of is read again; the same positions give the same event ids)."""
    if cfg.source.kind == "postgres":
        lsn = offset.get("lsn_commit") or offset.get("lsn")
        if not isinstance(lsn, int):
            raise ConnectError(f"the connector's offset has no lsn: {json.dumps(offset)}")
        return f"{lsn:016X}"
    if "file" not in offset or "pos" not in offset:
        raise ConnectError(f"the connector's offset has no binlog file and position: {json.dumps(offset)}")
    from .sources.mysql.common import format_checkpoint
    return format_checkpoint(None, offset["file"], int(offset["pos"]))


# ---------------------------------------------------------------- the REST client

class ConnectClient:
    def __init__(self, url: str, name: str, timeout: float = 30.0):
        self.base, self.name = url.rstrip("/"), name
        self.http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, body=None, ok=(200, 201, 202, 204), params=None):
        url = f"{self.base}{path}"
        try:
            r = self.http.request(method, url, json=body, params=params)
        except httpx.HTTPError as e:
            raise ConnectError(f"Kafka Connect at {self.base} is unreachable: {type(e).__name__}: {e}") from None
        if r.status_code in ok:
            return r.json() if r.content else None
        try:
            msg = r.json().get("message") or r.text
        except ValueError:
            msg = r.text
        msg = " ".join(str(msg).split())                        # Connect's multi-line messages on one line
        what = {404: "not found", 409: "busy (a rebalance or a concurrent change; try again shortly)",
                400: "refused the request"}.get(r.status_code, f"answered {r.status_code}")
        raise ConnectError(f"Kafka Connect {method} {path}: {what}: {msg}")

    def exists(self) -> bool:
        try:
            self.request("GET", f"/connectors/{self.name}")
            return True
        except ConnectError as e:
            if ": not found:" in str(e):
                return False
            raise

    def put_config(self, config: dict) -> bool:
        """Creates or updates; True if it was created."""
        before = self.exists()
        self.request("PUT", f"/connectors/{self.name}/config", config)
        return not before

    def create_stopped(self, config: dict) -> None:
        self.request("POST", "/connectors", {"name": self.name, "config": config, "initial_state": "STOPPED"})

    def status(self) -> dict:
        return self.request("GET", f"/connectors/{self.name}/status")

    def stop_and_wait(self) -> None:
        self.request("PUT", f"/connectors/{self.name}/stop")
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while self.status()["connector"]["state"] != "STOPPED":
            if time.monotonic() > deadline:
                raise ConnectError(f"connector {self.name} did not reach STOPPED within {STOP_WAIT_SECONDS:.0f} s")
            time.sleep(0.5)

    def offsets(self) -> list[dict]:
        return self.request("GET", f"/connectors/{self.name}/offsets")["offsets"]

    def alter_offsets(self, offsets: list[dict]) -> None:
        self.request("PATCH", f"/connectors/{self.name}/offsets", {"offsets": offsets})


# ---------------------------------------------------------------- the command

def _client(cfg: Config) -> ConnectClient:
    if cfg.connect is None:
        raise ConfigError(str(cfg.path), "connect", "required table [connect] is missing (url, name, options)")
    return ConnectClient(cfg.connect.url, cfg.connect.name)


def _agent_checkpoint(cfg: Config) -> str | None:
    from .spool import Spool
    if not (cfg.agent.state_dir / "spool.db").exists():
        return None
    spool = Spool(cfg.agent.state_dir, readonly=True)
    try:
        return spool.checkpoint()
    finally:
        spool.close()


def run(cfg: Config, action: str, *, restart_failed: bool = False, handoff: bool = False) -> int:
    if action == "plan":
        config, notes = plan(cfg, has_checkpoint=_agent_checkpoint(cfg) is not None)
        print(json.dumps(config, indent=2))
        for n in notes:
            print(f"# not expressed: {n}", file=__import__("sys").stderr)
        return 0
    client = _client(cfg)
    name = client.name
    try:
        if action == "deploy":
            return _deploy(cfg, client, handoff)
        if action == "status":
            return _status(client, restart_failed)
        if action == "pause":
            client.request("PUT", f"/connectors/{name}/pause")
        elif action == "resume":
            client.request("PUT", f"/connectors/{name}/resume")
        elif action == "restart":
            client.request("POST", f"/connectors/{name}/restart", params={"includeTasks": "true"})
        elif action == "delete":
            client.request("DELETE", f"/connectors/{name}")
        elif action == "handback":
            return _handback(cfg, client)
        print(f"connector {name}: {action} requested")
        return 0
    finally:
        client.close()


def _deploy(cfg: Config, client: ConnectClient, handoff: bool) -> int:
    from .statelock import unless_agent_runs
    checkpoint = _agent_checkpoint(cfg)
    config, _ = plan(cfg, has_checkpoint=checkpoint is not None)
    if not handoff:
        created = client.put_config(config)
        print(f"connector {client.name}: {'created' if created else 'config updated (or unchanged)'}")
        return 0
    with unless_agent_runs(cfg.agent.state_dir) as pid:
        if pid is not None:
            raise CdcError(f"the agent (pid {pid}) is running: stop it first, then hand its position over")
        checkpoint = _agent_checkpoint(cfg)
        if checkpoint is None:
            raise CdcError("the agent has no checkpoint yet: nothing to hand over (deploy without --handoff)")
        if client.exists():
            client.put_config(config)
            client.stop_and_wait()
        else:
            client.create_stopped(config)          # never runs before its offset is set
        client.alter_offsets([{"partition": partition(cfg), "offset": offset_from_checkpoint(cfg, checkpoint)}])
        client.request("PUT", f"/connectors/{client.name}/resume")
    print(f"connector {client.name}: deployed from the agent's checkpoint {checkpoint}; the agent must stay stopped")
    return 0


def _status(client: ConnectClient, restart_failed: bool) -> int:
    st = client.status()
    conn = st["connector"]
    print(f"connector {client.name}: {conn['state']} on {conn.get('worker_id', '?')}")
    failed = []
    for t in st.get("tasks", []):
        trace = (t.get("trace") or "").strip().splitlines()
        print(f"  task {t['id']}: {t['state']} on {t.get('worker_id', '?')}" + (f": {trace[0]}" if trace else ""))
        if t["state"] == "FAILED":
            failed.append(t["id"])
    if restart_failed:
        for tid in failed:
            client.request("POST", f"/connectors/{client.name}/tasks/{tid}/restart")
            print(f"  task {tid}: restart requested")
    unhealthy = conn["state"] == "FAILED" or (failed and not restart_failed)
    return 1 if unhealthy else 0


def _handback(cfg: Config, client: ConnectClient) -> int:
    from .spool import Spool
    from .statelock import unless_agent_runs
    client.stop_and_wait()
    mine = [o for o in client.offsets() if o.get("partition") == partition(cfg)]
    if not mine:
        raise ConnectError(f"connector {client.name} has no offset for {json.dumps(partition(cfg))}")
    checkpoint = checkpoint_from_offset(cfg, mine[0]["offset"])
    with unless_agent_runs(cfg.agent.state_dir) as pid:
        if pid is not None:
            raise CdcError(f"the agent (pid {pid}) is running: it must not capture while the connector does")
        spool = Spool(cfg.agent.state_dir)
        try:
            spool.set_checkpoint(checkpoint)
        finally:
            spool.close()
    print(f"connector {client.name}: stopped; the agent resumes from {checkpoint} (delete the connector when done)")
    return 0
