"""`cdc-agent demo`: the embedded demo that runs anywhere the package runs.

Creates the sample ERP database (SQLite, `agent/demo_erp.sql`) where the config's source dsn points
(demo-state/erp.db with the top-level agent.toml), installs trigger capture like `cdc-agent setup`, starts
the agent in this process, runs a small business workload (orders placed and moving through their
statuses, price tiers and addresses changing) and prints the domain events as they land in the file target.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import random
import shutil
import socket
import sqlite3
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import orjson

from . import config as config_mod
from . import logs
from .errors import CdcError, ConfigError
from .secrets import redact
from .shipped import is_installed_copy, shipped

DDL = Path(__file__).resolve().parent / "demo_erp.sql"
APP_ID = 1128547137                  # PRAGMA application_id of a database the demo created ('CDCA')

NEXT = {"N": "A", "H": "A", "A": "P", "P": "S", "S": "I"}     # how an order moves on in the ERP
TIERS = {"STD": "0", "SLV": "5", "GLD": "12.5", "PLT": "20"}
STREETS = [("14 Quay Street", "Galway", "H91 T6XK", "IE"), ("Königsallee 27", "Düsseldorf", "40212", "DE"),
           ("9 Bridge Road", "York", "YO1 6JD", "GB"), ("Via Roma 45", "Torino", "10123", "IT"),
           ("Kungsgatan 8", "Göteborg", "411 19", "SE"), ("5 place Bellecour", "Lyon", "69002", "FR")]
SKUS = [("TENT-2P", "149.90"), ("PEG-SET", "10.00"), ("LAMP-LED", "89.90"), ("STOVE-GAS", "64.50"),
        ("MAT-XL", "39.95"), ("BAG-30L", "119.00")]
NAMES = ["Gorse Studio", "Hazel Foods", "Ivy Print Ltd", "Juniper Tech", "Kauri Imports", "Larch & Co"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cdc-agent demo",
                                description="Sample ERP in SQLite + trigger capture + a business workload; "
                                            "prints the domain events as they land.")
    p.add_argument("-c", "--config", default=None,
                   help="the demo config (default: the example agent.toml; from an installed package, a copy "
                        "of it in ./cdc-agent-demo/)")
    p.add_argument("--seconds", type=float, default=12.0, help="how long the workload runs (default 12)")
    p.add_argument("--quiet", action="store_true", help="print only the summary, not every event")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return _run(args)
    except ConfigError as e:
        print(f"cdc-agent demo: config error: {redact(str(e))}", file=sys.stderr)
        return 2
    except (CdcError, OSError, sqlite3.Error) as e:
        print(f"cdc-agent demo: {redact(str(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# ---------------------------------------------------------------- preparing the demo folder


def _default_config() -> Path:
    """The example agent.toml. Its paths are relative to it, so an installed copy (in the read-only share
    directory) is copied to ./cdc-agent-demo/ first and the demo's files land beside that copy."""
    example = shipped("agent.toml")
    if not is_installed_copy(example):
        return example
    here = Path.cwd() / "cdc-agent-demo" / "agent.toml"
    if not here.exists():
        here.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(example, here)
        print(f"cdc-agent demo: copied the example config to {here}")
    return here


def _shown(path: Path) -> str:
    """The config's path as the user would type it: relative when it is below the current directory."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _demo_paths(cfg) -> tuple[Path, Path, Path]:
    from .sources.trigger import parse_dsn
    t = parse_dsn(cfg.source.dsn, str(cfg.path))
    if cfg.source.kind != "trigger" or t.dialect != "sqlite" or not t.sqlite_path or t.sqlite_path == ":memory:":
        raise ConfigError(str(cfg.path), "source", "the demo needs a trigger source on a SQLite file "
                                                   "(like the top-level agent.toml)")
    files = [tg for tg in cfg.targets if tg.kind == "file"]
    if not files:
        raise ConfigError(str(cfg.path), "targets", "the demo prints what a file target receives: add one")
    return Path(t.sqlite_path), cfg.agent.state_dir, files[0].options.path


def _fresh(db: Path, state: Path, out: Path) -> None:
    """Start from a clean slate, but never delete anything the demo did not make."""
    if db.exists():
        try:
            c = sqlite3.connect(db)
            app = c.execute("PRAGMA application_id").fetchone()[0]
            c.close()
        except sqlite3.Error:
            app = None
        if app != APP_ID:
            raise CdcError(f"{db} exists and is not the demo's database: the demo only replaces its own "
                           f"sample database; point source.dsn at another file")
    home = db.parent.resolve()
    for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}-journal")):
        p.unlink(missing_ok=True)
    for p in (state, out):
        if p.exists() and home in p.resolve().parents:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        elif p.exists():
            print(f"note: {p} is outside the demo folder {home}; leaving it as it is")
    db.parent.mkdir(parents=True, exist_ok=True)
    c = sqlite3.connect(db)
    c.executescript(DDL.read_text(encoding="utf-8"))
    c.close()


def _free_listen(listen: str | None) -> str | None:
    if not listen:
        return None
    host, _, port = listen.rpartition(":")
    with socket.socket() as s:
        try:
            s.bind((host.strip("[]"), int(port)))
            return listen
        except OSError:
            pass
    with socket.socket() as s:
        s.bind((host.strip("[]"), 0))
        return f"{host}:{s.getsockname()[1]}"


# ---------------------------------------------------------------- the business workload


class Workload:
    """What an ERP's users do all day, compressed: a scripted start that shows every event type once,
    then random actions."""

    def __init__(self, db: Path, seed: int = 7):
        self.conn = sqlite3.connect(db, isolation_level=None, timeout=30)
        self.rnd = random.Random(seed)
        self.next_order = 2001
        self.next_customer = 7
        self.actions = 0

    def close(self) -> None:
        self.conn.close()

    def _tx(self, *stmts: tuple[str, tuple]) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in stmts:
                c.execute(sql, params)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        self.actions += 1

    def _customers(self) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT customer_id FROM customers")]

    def place_order(self) -> None:
        cust = self.rnd.choice(self._customers())
        oid, self.next_order = self.next_order, self.next_order + 1
        lines = [(self.rnd.choice(SKUS), self.rnd.randint(1, 4)) for _ in range(self.rnd.randint(1, 3))]
        total = sum(float(price) * qty for (_, price), qty in lines)
        stmts: list[tuple[str, tuple[object, ...]]] = [
            ("INSERT INTO orders VALUES (?, ?, 'N', ?, datetime('now'))", (oid, cust, f"{total:.2f}"))]
        stmts += [("INSERT INTO order_lines VALUES (?, ?, ?, ?, ?)", (oid, i + 1, sku, qty, price))
                  for i, ((sku, price), qty) in enumerate(lines)]
        self._tx(*stmts)

    def advance_order(self) -> bool:
        rows = self.conn.execute("SELECT order_id, status FROM orders WHERE status NOT IN ('I', 'R')").fetchall()
        if not rows:
            return False
        oid, st = self.rnd.choice(rows)
        r = self.rnd.random()
        new = "H" if st == "N" and r < 0.15 else ("R" if st == "S" and r < 0.1 else NEXT[st])
        self._tx(("UPDATE orders SET status = ? WHERE order_id = ?", (new, oid)))
        return True

    def change_pricing(self) -> None:
        cust = self.rnd.choice(self._customers())
        now = self.conn.execute("SELECT price_tier FROM customers WHERE customer_id = ?", (cust,)).fetchone()[0]
        tier = self.rnd.choice([t for t in TIERS if t != now])
        self._tx(("UPDATE customers SET price_tier = ?, discount_pct = ? WHERE customer_id = ?",
                  (tier, TIERS[tier], cust)))

    def change_address(self) -> None:
        row = self.conn.execute("SELECT address_id, street FROM addresses WHERE kind = 'shipping' "
                                "ORDER BY random() LIMIT 1").fetchone()
        street, city, pc, country = self.rnd.choice([s for s in STREETS if s[0] != row[1]])
        self._tx(("UPDATE addresses SET street = ?, city = ?, postcode = ?, country = ? WHERE address_id = ?",
                  (street, city, pc, country, row[0])))

    def new_customer(self) -> None:
        cid, self.next_customer = self.next_customer, self.next_customer + 1
        street, city, pc, country = self.rnd.choice(STREETS)
        self._tx(("INSERT INTO customers (customer_id, name, email, price_tier, discount_pct) "
                  "VALUES (?, ?, ?, 'STD', 0)", (cid, self.rnd.choice(NAMES), f"buyer{cid}@example.com")),
                 ("INSERT INTO addresses (customer_id, kind, street, city, postcode, country) "
                  "VALUES (?, 'shipping', ?, ?, ?, ?)", (cid, street, city, pc, country)))

    def step(self) -> None:
        if self.actions < 6:          # every event type within the first second or two
            [self.place_order, self.advance_order, self.change_pricing, self.change_address,
             self.place_order, self.advance_order][self.actions]()
            return
        r = self.rnd.random()
        if r < 0.35:
            self.place_order()
        elif r < 0.7:
            if not self.advance_order():
                self.place_order()
        elif r < 0.82:
            self.change_pricing()
        elif r < 0.94:
            self.change_address()
        else:
            self.new_customer()


# ---------------------------------------------------------------- printing what lands in the file target


def describe(ev: dict) -> str:
    """One compact line for a person."""
    t, d = ev["type"], ev.get("data") or {}
    b, a = d.get("before") or {}, d.get("after") or {}
    if t == "customer.pricing.updated":
        return (f"customer {a.get('customer_id')} ({a.get('name')}): tier {b.get('tier')} → {a.get('tier')}, "
                f"discount {b.get('discount_pct')}% → {a.get('discount_pct')}%")
    if t == "customer.address.changed":
        return (f"customer {a.get('customer_id')}: {a.get('kind')} address → {a.get('street')}, "
                f"{a.get('postcode')} {a.get('city')}, {a.get('country')}")
    if t == "customer.order.placed":
        return f"order {a.get('order_id')} placed by customer {a.get('customer_id')}, total {a.get('total')}"
    if t == "order.status.changed":
        return f"order {a.get('order_id')}: {b.get('status') or '(new)'} → {a.get('status')}"
    img = a or b
    keys = set(d.get("key") or {})
    return f"{ev['source'].rsplit('.', 1)[-1]} {ev.get('subject')} {d.get('op')}: " + \
        ", ".join(f"{k}={v}" for k, v in img.items() if k not in keys)


class Tail(threading.Thread):
    def __init__(self, path: Path, quiet: bool):
        super().__init__(name="demo-tail", daemon=True)
        self.path, self.quiet = path, quiet
        self.stop = threading.Event()
        self.counts: Counter = Counter()
        self.ids: set[str] = set()
        self._pos = 0

    def poll(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            f.seek(self._pos)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._pos += end
        for line in data[:end].splitlines():
            if not line.strip():
                continue
            ev = orjson.loads(line)
            if ev["id"] in self.ids:
                continue
            self.ids.add(ev["id"])
            self.counts[ev["type"]] += 1
            if not self.quiet:
                hhmmss = ev["time"][11:23]
                print(f"  {hhmmss}  {ev['type']:<27} {describe(ev)}", flush=True)

    def run(self) -> None:
        while not self.stop.wait(0.1):
            self.poll()
        self.poll()


# ---------------------------------------------------------------- the run


def _changelog_rows(db: Path, table: str) -> int:
    c = sqlite3.connect(db, timeout=30)
    try:
        return c.execute(f'SELECT COUNT(*) FROM "{table}" WHERE op <> \'S\'').fetchone()[0]
    finally:
        c.close()


def _run(args) -> int:
    from .pipeline import run_agent
    from .sources.trigger import TriggerAdmin

    cfg = config_mod.load(args.config or _default_config())
    db, state, out = _demo_paths(cfg)
    logs.setup(cfg.agent.log_format, "warning")          # the demo prints events, not the agent's log
    listen = _free_listen(cfg.health.listen)
    cfg = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, delivery="thread"),
                              health=dataclasses.replace(cfg.health, listen=listen))
    say = print
    say(f"cdc-agent demo: sample ERP database {db}")
    _fresh(db, state, out)
    for line in TriggerAdmin(cfg).setup():
        if not args.quiet:
            say(f"  setup: {line}")
    say(f"capturing {', '.join(cfg.source.tables)} with triggers; events go to {out}")
    if listen:
        say(f"health: http://{listen}/health   metrics: http://{listen}/metrics")
    say(f"running a business workload for {args.seconds:g} s; domain events as they land:\n")

    stop = threading.Event()
    result: dict = {}

    def agent_main():
        try:
            result["rc"] = run_agent(cfg, stop)
        except BaseException as e:           # shown below; the demo must not hang on a dead agent
            result["error"] = e

    agent = threading.Thread(target=agent_main, name="demo-agent", daemon=True)
    agent.start()
    tail = Tail(out, args.quiet)
    tail.start()
    work = Workload(db)
    try:
        end = time.monotonic() + args.seconds
        while time.monotonic() < end and agent.is_alive():
            work.step()
            time.sleep(work.rnd.uniform(0.08, 0.3))
        # let the agent catch up: the changelog is empty and nothing new lands for a moment
        deadline = time.monotonic() + 20
        seen, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline and agent.is_alive():
            n = len(tail.ids)
            if n != seen:
                seen, quiet_since = n, time.monotonic()
            if _changelog_rows(db, cfg.source.changelog_table) == 0 and time.monotonic() - quiet_since > 1.0:
                break
            time.sleep(0.1)
    finally:
        work.close()
        stop.set()
        agent.join(30)
        tail.stop.set()
        tail.join(5)
    if "error" in result:
        raise result["error"]
    say("")
    total = sum(tail.counts.values())
    say(f"{work.actions} business transactions → {total} events in {out}:")
    for typ, n in sorted(tail.counts.items(), key=lambda kv: (kv[0].startswith("row."), kv[0])):
        say(f"  {n:5d}  {typ}")
    shown = _shown(cfg.path)
    say(f"\nnext: `cdc-agent status -c {shown}`, `cdc-agent run -c {shown}` (the database and its "
        f"triggers stay in {db.parent})")
    if total == 0:
        print("cdc-agent demo: no events arrived; see the messages above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    logging.basicConfig()
    sys.exit(main())
