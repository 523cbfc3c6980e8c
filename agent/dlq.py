"""`cdc-agent dlq list|show ID|retry [ID]|drop ID` — the dead-letter store (CONTRACT §5).

Two kinds of dead letters live in the spool:
- target rejections: an event a target refused for good (HTTP 400 ...), with the target's answer;
- unmappable changes (target "mapping"): a row change no rule could turn into an event (an unmapped status
  code, a missing key), with the raw change.

`retry` works whether the agent runs or not:
- a target rejection is sent again right now (same event, same id, rendered in the target's format): by the
  running agent's worker for that target, between two of its batches, so nothing else writes to the target
  at the same time (the command waits up to 30 s for the outcome); when no agent runs, by the command
  itself, holding the agent's lock so that no agent starts meanwhile. Accepted → removed from the store and
  counted as delivered; rejected again → stays, with the new answer as its reason and `retries` + 1; target
  unreachable → stays, and the remaining dead letters of that target are not tried this time.
- an unmappable change is mapped again with the *current* config; the events it now gives are spooled
  (a running agent delivers them within a second, otherwise the next `run` does) and the dead letter is
  removed. If it still cannot be mapped it stays with the new reason.
A retried event arrives after later events of its subject (the order caveat in the README).

Exit codes: 0 done, 1 something could not be done (unknown ID, retry failed), 2 bad arguments.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson

from . import rawjson
from .config import Config, TargetSettings
from .errors import CdcError, SpoolError, TargetError, TargetRejected
from .interfaces import SpooledEvent, Target
from .secrets import redact
from .spool import DeadLetter, Spool
from .statelock import unless_agent_runs

log = logging.getLogger(__name__)


def dlq_command(cfg: Config, args) -> int:
    action, dl_id = args.action, getattr(args, "id", None)
    if action in ("show", "drop") and dl_id is None:
        print(f"cdc-agent: dlq {action} needs the dead letter's ID (see `cdc-agent dlq list`)", file=sys.stderr)
        return 2
    if action in ("list", "show"):
        spool = Spool(cfg.agent.state_dir, readonly=True)
    else:
        Spool(cfg.agent.state_dir, readonly=True).close()     # a clear message when there is no spool yet
        spool = Spool(cfg.agent.state_dir)
    try:
        if action == "list":
            return _list(cfg, spool, as_json=getattr(args, "json", False))
        if action == "show":
            assert dl_id is not None           # checked above
            return _show(cfg, spool, dl_id)
        if action == "drop":
            assert dl_id is not None
            return _drop(spool, dl_id)
        return _retry(cfg, spool, dl_id)
    finally:
        spool.close()


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _subject(d: DeadLetter) -> str:
    try:
        if d.body:
            return str(orjson.loads(d.body).get("subject", ""))
        if d.change:
            ch = orjson.loads(d.change)
            row = ch.get("after") or ch.get("before") or {}
            keys = ch.get("key_columns") or []
            if keys and all(k in row for k in keys):
                return "|".join("" if row[k] is None else str(row[k]) for k in keys)
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        pass
    return ""


def _row(d: DeadLetter, cfg: Config) -> dict:
    return {"id": d.dl_id, "priority": cfg.priority_of(d.type), "target": d.target or "mapping",
            "event_id": d.event_id, "type": d.type, "subject": _subject(d), "position": d.position,
            "reason": redact(d.reason), "retries": d.retries, "time": _when(d.created_at)}


_PRIORITY_ORDER = {"high": 0, "normal": 1, "low": 2}


def _list(cfg: Config, spool: Spool, as_json: bool = False) -> int:
    """High-priority dead letters first (the business exception queue), then by arrival."""
    letters = sorted(spool.dead_letters(), key=lambda d: (_PRIORITY_ORDER[cfg.priority_of(d.type)], d.dl_id))
    if as_json:
        for d in letters:
            print(orjson.dumps(_row(d, cfg)).decode())
        return 0
    if not letters:
        print("no dead letters")
        return 0
    rows = [_row(d, cfg) for d in letters]
    cols = [("ID", "id"), ("PRIORITY", "priority"), ("TARGET", "target"), ("EVENT ID", "event_id"), ("TYPE", "type"),
            ("SUBJECT", "subject"), ("RETRIES", "retries"), ("TIME", "time")]
    width = {k: max(len(h), *(len(str(r[k] if r[k] is not None else "-")) for r in rows)) for h, k in cols}
    print("  ".join(h.ljust(width[k]) for h, k in cols) + "  REASON")
    for r in rows:
        print("  ".join(str(r[k] if r[k] is not None else "-").ljust(width[k]) for _, k in cols)
              + "  " + r["reason"])
    n_map = sum(1 for r in rows if r["target"] == "mapping")
    print(f"\n{len(rows)} dead letter(s)" + (f", {n_map} of them unmappable changes" if n_map else "")
          + ": `cdc-agent dlq show ID` for the full event, `dlq retry [ID]` to send again, `dlq drop ID` to discard")
    return 0


def _get(spool: Spool, dl_id: int) -> DeadLetter | None:
    d = spool.dead_letter(dl_id)
    if d is None:
        print(f"cdc-agent: no dead letter {dl_id} (see `cdc-agent dlq list`)", file=sys.stderr)
    return d


def _show(cfg: Config, spool: Spool, dl_id: int) -> int:
    d = _get(spool, dl_id)
    if d is None:
        return 1
    r = _row(d, cfg)
    for k in ("id", "priority", "target", "event_id", "type", "subject", "position", "retries", "time"):
        print(f"{k + ':':<10} {r[k] if r[k] is not None else '-'}")
    print(f"{'reason:':<10} {r['reason']}")
    if d.event_id:
        from .dashboard import event_trace
        trace = event_trace(spool, cfg, d.event_id)
        if trace:                  # the same event at every target (also on the dashboard: GET /events/ID)
            print("targets:")
            for name, t in trace["targets"].items():
                print(f"  {name}: {t['state']}" + (f" ({redact(t['reason'])})" if t.get("reason") else ""))
    raw, label = (d.body, "event") if d.body else (d.change, "change (mapped again on retry)")
    if raw:
        try:
            text = rawjson.dumps(rawjson.loads_exact(raw), option=orjson.OPT_INDENT_2).decode()   # exact digits
        except ValueError:
            text = raw.decode(errors="replace")
        print(f"{label}:\n{redact(text)}")
    return 0


def _drop(spool: Spool, dl_id: int) -> int:
    if not spool.drop_dead_letter(dl_id):
        print(f"cdc-agent: no dead letter {dl_id} (see `cdc-agent dlq list`)", file=sys.stderr)
        return 1
    print(f"dropped dead letter {dl_id}")
    return 0


RETRY_WAIT_SECONDS = 30.0     # how long `dlq retry` waits for a running agent to send what it handed over


def _retry(cfg: Config, spool: Spool, dl_id: int | None) -> int:
    if dl_id is not None:
        d = _get(spool, dl_id)
        if d is None:
            return 1
        letters = [d]
    else:
        letters = spool.dead_letters()
        if not letters:
            print("no dead letters")
            return 0
    done = failed = 0
    mapper = None
    with unless_agent_runs(cfg.agent.state_dir) as agent_pid:
        for d in letters:
            if d.target is None:        # spooling events again is safe next to a running agent
                if mapper is None:
                    from .mapping import EventMapper
                    mapper = EventMapper(cfg)
                ok = _retry_mapping(spool, mapper, d)
                done += ok
                failed += not ok
        rejections = [d for d in letters if d.target is not None]
        if rejections:
            ok_n, failed_n = (_retry_here(cfg, spool, rejections) if agent_pid is None
                              else _retry_by_agent(cfg, spool, rejections, agent_pid))
            done += ok_n
            failed += failed_n
    print(f"{done} retried successfully, {failed} still in dead letters")
    return 0 if failed == 0 else 1


def _configured(cfg: Config, d: DeadLetter) -> TargetSettings | None:
    assert d.target is not None                # only rejections (they name their target) are sent again
    try:
        return cfg.target(d.target)
    except KeyError:
        print(f"{d.dl_id}: target {d.target!r} is no longer in the config; add it back or `dlq drop {d.dl_id}`")
        return None


def _print_outcome(d: DeadLetter, kind: str, text: str) -> None:
    if kind == "delivered":
        print(f"{d.dl_id}: delivered event {d.event_id} to {d.target}")
    elif kind == "rejected":
        print(f"{d.dl_id}: {d.target} rejected it again: {text}")
    elif kind == "unreachable":
        print(f"{d.dl_id}: {d.target} is unreachable, try again later: {text}")
    else:
        print(f"{d.dl_id}: {text}")


def _retry_here(cfg: Config, spool: Spool, letters: list[DeadLetter]) -> tuple[int, int]:
    """No agent runs (and none can start: we hold its lock): send through the targets from here."""
    from adapters import build_target
    done = failed = 0
    targets: dict[str, Target] = {}
    unreachable: set[str] = set()
    try:
        for d in letters:
            assert d.target is not None            # rejections only
            settings = _configured(cfg, d)
            if settings is None or d.target in unreachable:
                failed += 1
                continue
            try:
                target = targets.get(d.target)
                if target is None:
                    target = build_target(settings)
                    target.open()           # as the worker does: a target may connect or check itself here
                    targets[d.target] = target
                kind, text = send_dead_letter(spool, settings, target, d, cfg)
            except TargetError as e:
                kind, text = "unreachable", redact(str(e))
            except CdcError as e:
                kind, text = "failed", redact(str(e))
            if kind == "unreachable":
                unreachable.add(d.target)
            _print_outcome(d, kind, text)
            done += kind == "delivered"
            failed += kind != "delivered"
    finally:
        for t in targets.values():
            try:
                t.close()
            except Exception:
                pass
    return done, failed


def _retry_by_agent(cfg: Config, spool: Spool, letters: list[DeadLetter], pid: str) -> tuple[int, int]:
    """An agent runs: sending from here could interleave with its delivery (the file target cuts a line it
    is writing), so its target workers send them, between two batches; we wait for their outcomes."""
    waiting: dict[int, DeadLetter] = {}
    failed = 0
    for d in letters:
        if _configured(cfg, d) is None:
            failed += 1
        else:
            waiting[d.dl_id] = d
    if not waiting:
        return 0, failed
    spool.request_retries(list(waiting))
    print(f"the agent (pid {pid}) is running: its delivery sends {len(waiting)} dead letter(s) between two batches")
    done = 0
    deadline = time.monotonic() + RETRY_WAIT_SECONDS
    while waiting and time.monotonic() < deadline:
        for dl_id, d in list(waiting.items()):
            outcome = spool.retry_outcome(dl_id)
            if outcome is not None and outcome != "requested":
                kind, _, text = outcome.partition("\t")
                _print_outcome(d, kind, text)
                done += kind == "delivered"
                failed += kind != "delivered"
                spool.clear_retry(dl_id)
                del waiting[dl_id]
        if waiting:
            time.sleep(0.2)
    for dl_id, d in waiting.items():
        spool.clear_retry(dl_id)
        print(f"{dl_id}: the running agent (pid {pid}) did not send it within {RETRY_WAIT_SECONDS:.0f} s (its "
              f"delivery to {d.target} is busy or retrying: see `cdc-agent status`); try again later")
        failed += 1
    return done, failed


def send_dead_letter(spool: Spool, settings, target, d: DeadLetter, cfg=None) -> tuple[str, str]:
    """Send one dead letter through an open target (same event, same id, in the target's format) and record
    the result: ("delivered" | "rejected" | "unreachable" | "failed", detail)."""
    from .formats import render
    if not d.body:
        return "failed", "no event body stored; nothing to send"
    try:
        ev = rawjson.loads_exact(d.body)            # a json value's 1e400 is valid JSON, not a double
        body = render(d.body, settings.format, cfg)       # cfg: Debezium's encodings need the column types
        target.send([SpooledEvent(0, d.event_id or ev.get("id", ""), d.type, str(ev.get("subject", "")), body,
                                  0.0, d.position)])
    except TargetRejected as e:
        reason = redact(str(e))
        spool.bump_retries(d.dl_id, reason)
        return "rejected", reason
    except (TargetError, OSError) as e:
        spool.bump_retries(d.dl_id, d.reason)
        return "unreachable", redact(str(e))
    spool.resolve_dead_letter(d.dl_id, settings.name)
    return "delivered", ""


def resend_dead_letters(spool: Spool, settings, target, cfg=None) -> None:
    """In a target's worker, between two batches: send the dead letters `dlq retry` handed to the running
    agent, and leave each outcome for the command to print."""
    unreachable = False
    for d in spool.requested_retries(settings.name):
        if unreachable:       # like a retry from the command: the rest of this target waits for next time
            kind, text = "unreachable", "not tried: the target was unreachable for the dead letter before"
        else:
            try:
                kind, text = send_dead_letter(spool, settings, target, d, cfg)
            except SpoolError:
                raise
            except Exception as e:  # a bug: in the log with its traceback; the worker goes on delivering
                log.error("dlq retry of dead letter %d failed unexpectedly (a bug)", d.dl_id, exc_info=e)
                kind, text = "failed", f"unexpected error (a bug; see the agent's log): {type(e).__name__}: {e}"
        unreachable = kind == "unreachable"
        spool.set_retry_outcome(d.dl_id, f"{kind}\t{redact(text)}")


def _retry_mapping(spool: Spool, mapper, d: DeadLetter) -> bool:
    from .mapping import change_from_json
    if not d.change:
        print(f"{d.dl_id}: no row change stored; nothing to map")
        return False
    events, failures = mapper.map([change_from_json(d.change)])
    if failures:
        reason = redact("; ".join(f.reason for f in failures))
        spool.bump_retries(d.dl_id, reason)
        print(f"{d.dl_id}: still cannot be mapped: {reason}")
        return False
    # one transaction: never both, never neither
    added = spool.append(events, [], None, resolves_dead_letter=d.dl_id)
    print(f"{d.dl_id}: mapped again into {len(events)} event(s) ({', '.join(e.type for e in events) or 'none'}); "
          f"{added} spooled for delivery")
    return True
