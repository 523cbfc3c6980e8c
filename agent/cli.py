"""`cdc-agent` command line (CONTRACT §5). Exit codes: 0 ok, 1 problems, 2 bad config or arguments.
Every error is one clear line; a traceback is a bug."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading

import orjson

from . import __version__
from . import config as config_mod
from . import logs
from .errors import CdcError, ConfigError, SourceError
from .secrets import redact

log = logging.getLogger(__name__)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, like a bad config
        self.exit(2, f"cdc-agent: {message} (see cdc-agent --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cdc-agent", description="Change-data-capture agent: database changes to domain events.")
    p.add_argument("--version", action="version", version=f"cdc-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def cmd(name, help_):
        c = sub.add_parser(name, help=help_)
        c.add_argument("-c", "--config", default="agent.toml", help="config file (default: agent.toml)")
        return c

    cmd("check", "preflight: connectivity, privileges, log settings, tables; prints the fix for each problem")
    cmd("setup", "create what capture needs (publication + slot, or triggers)").add_argument(
        "--dry-run", action="store_true", help="print the SQL for review instead of running it")
    cmd("run", "capture and deliver until SIGTERM/SIGINT").add_argument(
        "--accept-breaking", action="store_true", help="start although the event catalog changed incompatibly "
                                                        "([agent] catalog), and record the new one")
    cat = cmd("catalog", "the event catalog: JSON Schema per event type, or an AsyncAPI 3.0 document")
    cat.add_argument("--format", choices=["jsonschema", "asyncapi"], default="jsonschema")
    cat.add_argument("-o", "--output", metavar="FILE", help="write it to FILE instead of printing it")
    cat.add_argument("--check", metavar="OLD", help="list changes against an older catalog (jsonschema); "
                                                    "exit 1 when one is breaking")
    cat.add_argument("--accept-breaking", action="store_true", help="with --check and -o: write it anyway, exit 0")
    st = cmd("status", "position, lag and per-target counters")
    st.add_argument("--json", action="store_true", help="print the health report as JSON")
    st.add_argument("--url", help="ask a running agent's health endpoint instead of reading the spool")
    cmd("teardown", "remove slot, publication, triggers").add_argument("--dry-run", action="store_true")
    dlq = cmd("dlq", "the dead-letter store")
    dlq.add_argument("action", choices=["list", "show", "retry", "drop"])
    dlq.add_argument("id", nargs="?", type=int, help="dead letter id (show, drop; retry: all when omitted)")
    dlq.add_argument("--json", action="store_true", help="list: one JSON object per line")
    rp = cmd("replay", "send a target again what the spool still holds from a point (same ids)")
    rp.add_argument("--target", required=True, help="the target to send to again")
    point = rp.add_mutually_exclusive_group(required=True)
    point.add_argument("--since", metavar="TIME", help="RFC 3339 time with zone, or how long ago: 90s, 15m, 2h, 1d")
    point.add_argument("--from", dest="from_position", metavar="POSITION",
                       help="a source position as events carry it (the `position` attribute)")
    rc = cmd("reconcile", "compare the source tables with a sql target's copy; --repair fixes the differences")
    rc.add_argument("--target", required=True, help="the sql target to compare")
    rc.add_argument("--table", action="append", help="a source table (repeatable; default: all the target's)")
    rc.add_argument("--repair", action="store_true", help="write missing and different rows, delete extra ones")
    rc.add_argument("--json", action="store_true", help="print the result as JSON")
    rc.add_argument("--chunk-rows", type=int, default=5000, help="rows per checksum chunk (default 5000)")
    tg = cmd("targets", "target cursors in the spool")
    tg.add_argument("action", choices=["forget"])
    tg.add_argument("name", help="a target no longer in the config whose cursor the spool still keeps")
    cn = cmd("connect", "the same capture as a Debezium connector on Kafka Connect ([connect], CONTRACT §8)")
    cn.add_argument("action", choices=["plan", "deploy", "status", "pause", "resume", "restart", "delete",
                                       "handback"])
    cn.add_argument("--restart-failed", action="store_true", help="status: restart the tasks that failed")
    cn.add_argument("--handoff", action="store_true",
                    help="deploy: start the connector at the (stopped) agent's checkpoint, via the offsets API")
    from .snapshot_cli import add_parser as add_snapshot_parser
    add_snapshot_parser(cmd)
    from .conflicts import add_parser as add_conflicts_parser
    add_conflicts_parser(cmd)
    sub.add_parser("demo", help="run the embedded SQLite demo: sample ERP, workload, events printed "
                                "(cdc-agent demo --help for its options)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:          # the demo parses its own options
        from .demo import main as demo_main
        return demo_main(argv[1:])
    if argv[:1] != ["run"] or not gc.isenabled():
        return _main(argv)
    # no cyclic collection while `run` imports and builds what lives as long as the process (~20 ms of the
    # capture process's start): `_run` collects once and turns it back on (tune_gc)
    gc.disable()
    try:
        return _main(argv)
    finally:
        gc.enable()               # (on already once `_run` started: this is for a `run` that ended before)


def _main(argv: list[str]) -> int:
    if argv[:1] == ["run"]:
        _catch_stop_signals()
    args = _parser().parse_args(argv)
    try:
        cfg = config_mod.load(args.config)
        logs.setup(cfg.agent.log_format, cfg.agent.log_level, one_shot=args.command != "run")
        return _COMMANDS[args.command](cfg, args)
    except ConfigError as e:
        print(f"cdc-agent: config error: {redact(str(e))}", file=sys.stderr)
        return 2
    except CdcError as e:
        print(f"cdc-agent: {redact(str(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug: one line for the user; the traceback on request
        if os.environ.get("CDC_AGENT_TRACEBACK"):
            raise
        print(f"cdc-agent: unexpected error, please report it (set CDC_AGENT_TRACEBACK=1 for details): "
              f"{type(e).__name__}: {redact(str(e))}", file=sys.stderr)
        return 1


def _check(cfg, args) -> int:
    from .sources import capture_admin
    items = capture_admin(cfg).check()
    for admin in _target_admins(cfg):
        items += admin.check()
    width = max((len(i.name) for i in items), default=0)
    problems = 0
    for i in items:
        mark = "ok  " if i.ok else ("warn" if i.warning else "FAIL")
        print(f"[{mark}] {i.name.ljust(width)}  {redact(i.detail)}")
        if not i.ok and i.fix:
            for line in i.fix.splitlines():
                print(f"       fix: {redact(line)}")
        problems += (not i.ok and not i.warning)
    problems += _check_catalog(cfg)
    print(f"\n{'ready' if not problems else f'{problems} problem(s) to fix'}: {cfg.source.kind} source, "
          f"{len(cfg.source.tables)} table(s)")
    return 1 if problems else 0


def _check_catalog(cfg) -> int:
    """With `[agent] catalog`: the changes against the accepted catalog, as check lines; 1 when breaking."""
    if cfg.agent.catalog is None:
        return 0
    from .catalog import build, load_catalog
    from .catalog_diff import compare
    try:
        if not cfg.agent.catalog.exists():
            print(f"[ok  ] event catalog  {cfg.agent.catalog} does not exist yet: `run` writes it")
            return 0
        changes = compare(load_catalog(cfg.agent.catalog), build(cfg))
    except CdcError as e:
        print(f"[FAIL] event catalog  {redact(str(e))}")
        return 1
    breaking = [c for c in changes if c.breaking]
    print(f"[{'FAIL' if breaking else 'ok  '}] event catalog  {len(changes)} change(s) against {cfg.agent.catalog}, "
          f"{len(breaking)} breaking")
    for c in changes:
        print(f"       {'BREAKING' if c.breaking else 'ok'}: {c.text}")
    if breaking:
        print("       fix: tell the consumers, then start with `cdc-agent run --accept-breaking` (records the new "
              "catalog), or undo the change")
    return 1 if breaking else 0


def _catalog(cfg, args) -> int:
    from .catalog import catalog_command
    return catalog_command(cfg, args)


def _target_admins(cfg) -> list:
    """What `check` / `setup` do for targets whose kind declares it (adapters: `TargetKind.admin`)."""
    import adapters
    return [spec.admin(cfg, t) for t in cfg.targets if (spec := adapters.target_kind(t.kind)).admin is not None]


def _setup(cfg, args) -> int:
    from .sources import capture_admin
    admin = capture_admin(cfg)
    if args.dry_run:
        stmts = admin.setup_sql() + [s for a in _target_admins(cfg) for s in a.setup_sql()]
        print(f"-- cdc-agent setup for {cfg.agent.name}: {len(stmts)} statement(s); nothing was run")
        for s in stmts:
            print(s.rstrip().rstrip(";") + ";\n")
        for line in _setup_targets(cfg, dry_run=True):
            print(f"-- {line}")
        return 0
    for line in admin.setup() + [line for a in _target_admins(cfg) for line in a.setup()]:
        print(line)
    for line in _setup_targets(cfg, dry_run=False):
        print(line)
    return 0


def _setup_targets(cfg, dry_run: bool) -> list[str]:
    """Targets that create what they write to (a broker's topics or streams) have a `setup` method; it gets
    the (type, agent, schema, table) of every event the config can send that target."""
    from adapters import build_target
    named = {r.table for r in cfg.events}
    emitted = [(r.type, r.table) for r in cfg.events] + [(f"row.{t}", t) for t in cfg.source.tables if t not in named]
    lines: list[str] = []
    for ts in cfg.targets:
        target = build_target(ts)
        if hasattr(target, "setup"):
            origins = sorted({(typ, cfg.agent.name, *table.split(".", 1)) for typ, table in emitted if ts.wants(typ)})
            lines += target.setup(origins, dry_run=dry_run)
    return lines


def _teardown(cfg, args) -> int:
    from .sources import capture_admin
    admin = capture_admin(cfg)
    if args.dry_run:
        stmts = admin.teardown_sql()
        print(f"-- cdc-agent teardown for {cfg.agent.name}: {len(stmts)} statement(s); nothing was run")
        for s in stmts:
            print(s.rstrip().rstrip(";") + ";\n")
        return 0
    for line in admin.teardown():
        print(line)
    return 0


_STOP = threading.Event()       # set by SIGTERM / SIGINT during `run`


def _on_stop_signal(signum, frame) -> None:
    if _STOP.is_set():
        return
    log.info("%s received: draining and stopping", signal.Signals(signum).name)
    _STOP.set()


def _catch_stop_signals() -> None:
    """As early as `run` is known: a SIGTERM while the agent is still starting (a supervisor restarting it,
    a test) must stop it cleanly with exit 0, not kill it before its handler exists."""
    signal.signal(signal.SIGTERM, _on_stop_signal)
    signal.signal(signal.SIGINT, _on_stop_signal)


def _run(cfg, args) -> int:
    from .pipeline import run_agent
    from .worker import tune_gc
    stop = _STOP
    _catch_stop_signals()
    if cfg.agent.catalog is not None:
        from .catalog import gate
        try:
            if gate(cfg, args.accept_breaking, log):
                return 1
        except SourceError as e:       # the database is down: capture retries it; the catalog waits too
            log.warning("event catalog not checked (%s): the source is not reachable", redact(str(e)))
    tune_gc()
    gc.enable()               # main() turned it off for the start
    return run_agent(cfg, stop)


def _status(cfg, args) -> int:
    """The health report for a person. Asks the running agent (--url, else the configured [health] listen
    address); when no agent answers there, reads what the spool knows (no live source state)."""
    from .health import health_report
    from .spool import Spool
    report = None
    url = args.url or (f"http://{cfg.health.listen}" if cfg.health.listen else None)
    if url:
        import httpx
        if "://" not in url:
            url = "http://" + url
        try:
            resp = httpx.get(url.rstrip("/") + "/health", timeout=5)
            report = resp.json()
            if not isinstance(report, dict) or report.get("agent") != cfg.agent.name or "targets" not in report:
                raise ValueError(f"answer from {url} is not the health of agent {cfg.agent.name}")
        except (httpx.HTTPError, ValueError) as e:
            if args.url:           # asked for explicitly: say it did not work
                print(f"cdc-agent: cannot read {redact(args.url)}/health: {redact(str(e))}", file=sys.stderr)
                return 1
            report = None
    if report is None:
        spool = Spool(cfg.agent.state_dir, readonly=True)
        try:
            report = health_report(cfg, None, spool)
        finally:
            spool.close()
        report["status"] = "not running (read from the spool)"
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return 1 if report["status"] == "failing" else 0

    def val(v, unit=""):
        return "-" if v is None else f"{v}{unit}"

    src = report["source"]
    print(f"agent {report['agent']}: {report['status']}")
    print(f"source {src['kind']}: {'connected' if src.get('connected') else 'not connected'}, "
          f"position {val(src.get('position'))}, checkpoint {val(src.get('checkpoint'))}")
    print(f"  lag {val(src.get('lag_seconds'), ' s')}, retained WAL {val(src.get('retained_wal_bytes'), ' bytes')}, "
          f"changes captured {val(src.get('changes_captured'))}"
          + (", capture PAUSED (spool full)" if src.get("capture_paused") else ""))
    if src.get("error"):
        print(f"  error: {src['error']}")
    for r in report.get("reasons", []):
        print(f"  ! {r}")
    print(f"{'target':<16} {'state':<12} {'pending':>9} {'delivered':>10} {'failed':>7} {'dead':>6}  last error")
    for name, t in report["targets"].items():
        print(f"{name:<16} {t['state']:<12} {t['pending']:>9} {t['delivered']:>10} {t['failed']:>7} "
              f"{t['dead_lettered']:>6}  {t['last_error'] or ''}")
    two_way = {n: t for n, t in report["targets"].items() if "conflicts" in t}
    if two_way:
        print("conflicts: " + ", ".join(f"{n} {t['conflicts']} (unowned changes passed over: {t['unowned_changes']})"
                                        for n, t in two_way.items()) + "; see `cdc-agent conflicts`")
    print(f"dead letters: {report['dead_letters']} ({report['unmapped_dead_letters']} unmappable changes)"
          + ("; see `cdc-agent dlq list`" if report["dead_letters"] else ""))
    return 1 if report["status"] == "failing" else 0


def _dlq(cfg, args) -> int:
    from .dlq import dlq_command
    return dlq_command(cfg, args)


def _replay(cfg, args) -> int:
    from .replay import replay_command
    return replay_command(cfg, args)


def _reconcile(cfg, args) -> int:
    from .reconcile import reconcile_command
    return reconcile_command(cfg, args)


def _targets(cfg, args) -> int:
    """`targets forget NAME`: drop the cursor of a target removed from the config. A configured target's
    name is refused (exit 2: it would start again from the oldest cursor); a name the spool has no cursor
    for is exit 1."""
    from .spool import Spool
    name = args.name
    if name in {t.name for t in cfg.targets}:
        print(f"cdc-agent: target {name} is in {cfg.path}: `targets forget` drops the cursor of a target that is "
              "no longer configured; remove it from the config first", file=sys.stderr)
        return 2
    Spool(cfg.agent.state_dir, readonly=True).close()
    spool = Spool(cfg.agent.state_dir)
    try:
        if not spool.forget_target(name):
            stale = spool.stale_targets([t.name for t in cfg.targets])
            print(f"cdc-agent: the spool has no cursor for target {name} (cursors of targets not in the config: "
                  f"{', '.join(stale) or 'none'})", file=sys.stderr)
            return 1
        dead = spool.count_dead_letters(name)
    finally:
        spool.close()
    print(f"forgot target {name}: its cursor is gone from the spool"
          + (f"; its {dead} dead letter(s) stay until dropped (`cdc-agent dlq list`)" if dead else ""))
    return 0


def _connect(cfg, args) -> int:
    from .connect import run
    return run(cfg, args.action, restart_failed=args.restart_failed, handoff=args.handoff)


_COMMANDS = {"check": _check, "setup": _setup, "run": _run, "status": _status, "teardown": _teardown, "dlq": _dlq,
             "replay": _replay, "targets": _targets, "catalog": _catalog, "reconcile": _reconcile,
             "connect": _connect, "snapshot": lambda cfg, args: _snapshot(cfg, args),
             "conflicts": lambda cfg, args: _conflicts(cfg, args)}


def _conflicts(cfg, args) -> int:
    from .conflicts import run
    return run(cfg, args)


def _snapshot(cfg, args) -> int:
    from .snapshot_cli import run
    return run(cfg, args)


if __name__ == "__main__":
    sys.exit(main())
