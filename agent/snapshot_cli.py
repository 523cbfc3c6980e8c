"""`cdc-agent snapshot`: ask for a snapshot, show progress, cancel one (agent/snapshot.py runs them)."""

from __future__ import annotations

import sys
import time

import orjson

from .errors import CdcError
from .snapshot import CANCEL_PREFIX, SnapshotError, new_request, requests, store_request
from .spool import Spool


def add_parser(cmd) -> None:
    sn = cmd("snapshot", "ask the agent for an incremental snapshot (all captured tables by default)")
    sn.add_argument("--table", action="append", metavar="T", help="a captured table (repeatable)")
    sn.add_argument("--where", metavar="SQL", help="only rows matching this condition")
    sn.add_argument("--target", metavar="NAME", help="only this target gets the read events")
    sn.add_argument("--status", action="store_true", help="progress per table")
    sn.add_argument("--cancel", metavar="ID", help="stop a request")
    sn.add_argument("--json", action="store_true", help="--status as JSON")


def run(cfg, args) -> int:
    if args.status:
        return _status(cfg, args)
    spool = Spool(cfg.agent.state_dir)
    try:
        if args.cancel:
            if not any(r["id"] == args.cancel for r in requests(spool)):
                print(f"cdc-agent: no snapshot request {args.cancel!r} (see cdc-agent snapshot --status)",
                      file=sys.stderr)
                return 1
            spool.set_meta(CANCEL_PREFIX + args.cancel, "1")
            print(f"snapshot {args.cancel}: cancel requested")
            return 0
        tables = args.table or list(cfg.source.tables)
        unknown = [t for t in tables if t not in cfg.source.tables]
        if unknown:
            print(f"cdc-agent: table {unknown[0]} is not captured (source.tables: {', '.join(cfg.source.tables)})",
                  file=sys.stderr)
            return 2
        if args.target and args.target not in [t.name for t in cfg.targets]:
            print(f"cdc-agent: no target named {args.target!r} in the config", file=sys.stderr)
            return 2
        from .sources import open_source
        reader_fn = getattr(open_source(cfg), "snapshot_reader", None)
        if reader_fn is None:
            raise CdcError(f"source kind {cfg.source.kind} cannot snapshot yet")
        reader = reader_fn()
        try:
            for t in tables:
                reader.validate(t, args.where)
        except SnapshotError as e:
            print(f"cdc-agent: {e}", file=sys.stderr)
            return 1
        finally:
            reader.close()
        req = new_request(tables, args.where, args.target)
        store_request(spool, req)
        print(req["id"])
        return 0
    finally:
        spool.close()


def _status(cfg, args) -> int:
    spool = Spool(cfg.agent.state_dir, readonly=True)
    try:
        live = sys.stdout.isatty() and not args.json
        while True:
            reqs = requests(spool)
            if args.json:
                print(orjson.dumps(reqs).decode())
                return 0
            lines = []
            for r in reqs:
                lines.append(f"{r['id']}  {r['state']}" + (f"  ({r['error']})" if r.get("error") else ""))
                for t in r["tables"]:
                    done, est = r["rows"].get(t, 0), r["estimates"].get(t)
                    bar = ""
                    if est:
                        frac = min(1.0, done / est)
                        bar = "[" + "#" * int(frac * 30) + "." * (30 - int(frac * 30)) + f"] {frac:4.0%}"
                    lines.append(f"  {t}: {done} rows" + (f" of ~{est}" if est else "") + (f"  {bar}" if bar else ""))
            if not reqs:
                lines.append("no snapshot requests")
            print("\n".join(lines))
            if not live or not any(r["state"] in ("pending", "running") for r in reqs):
                return 0
            time.sleep(1.0)
            print(f"\x1b[{len(lines)}A\x1b[J", end="")
    finally:
        spool.close()
