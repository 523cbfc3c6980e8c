"""`cdc-agent dlq list|show ID|retry [ID]|drop ID` — the dead-letter store (CONTRACT §5).

Two kinds of dead letters live in the spool:
- target rejections: an event a target refused for good (HTTP 400 ...), with the target's answer;
- unmappable changes (target "mapping"): a row change no rule could turn into an event (an unmapped status
  code, a missing key), with the raw change.

`retry` works whether the agent runs or not:
- a target rejection is sent again right now, directly through the target's adapter (same event, same id,
  rendered in the target's format). Accepted → removed from the store and counted as delivered; rejected
  again → stays, with the new answer as its reason and `retries` + 1; target unreachable → stays, and the
  remaining dead letters of that target are not tried this time.
- an unmappable change is mapped again with the *current* config; the events it now gives are spooled
  (a running agent delivers them within a second, otherwise the next `run` does) and the dead letter is
  removed. If it still cannot be mapped it stays with the new reason.
A retried event arrives after later events of its subject (the order caveat in the README).

Exit codes: 0 done, 1 something could not be done (unknown ID, retry failed), 2 bad arguments.
"""

from __future__ import annotations

import sys
import time

import orjson

from . import rawjson
from .config import Config
from .errors import CdcError, TargetError, TargetRejected
from .interfaces import SpooledEvent
from .secrets import redact
from .spool import DeadLetter, Spool


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
            return _list(spool, as_json=getattr(args, "json", False))
        if action == "show":
            return _show(spool, dl_id)
        if action == "drop":
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


def _row(d: DeadLetter) -> dict:
    return {"id": d.dl_id, "target": d.target or "mapping", "event_id": d.event_id, "type": d.type,
            "subject": _subject(d), "position": d.position, "reason": redact(d.reason), "retries": d.retries,
            "time": _when(d.created_at)}


def _list(spool: Spool, as_json: bool = False) -> int:
    letters = spool.dead_letters()
    if as_json:
        for d in letters:
            print(orjson.dumps(_row(d)).decode())
        return 0
    if not letters:
        print("no dead letters")
        return 0
    rows = [_row(d) for d in letters]
    cols = [("ID", "id"), ("TARGET", "target"), ("EVENT ID", "event_id"), ("TYPE", "type"), ("SUBJECT", "subject"),
            ("RETRIES", "retries"), ("TIME", "time")]
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


def _show(spool: Spool, dl_id: int) -> int:
    d = _get(spool, dl_id)
    if d is None:
        return 1
    r = _row(d)
    for k in ("id", "target", "event_id", "type", "subject", "position", "retries", "time"):
        print(f"{k + ':':<10} {r[k] if r[k] is not None else '-'}")
    print(f"{'reason:':<10} {r['reason']}")
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
    targets: dict[str, object] = {}
    unreachable: set[str] = set()
    mapper = None
    try:
        for d in letters:
            if d.target is None:
                if mapper is None:
                    from .mapping import EventMapper
                    mapper = EventMapper(cfg)
                ok = _retry_mapping(spool, mapper, d)
            elif d.target in unreachable:
                failed += 1
                continue
            else:
                ok = _retry_delivery(cfg, spool, targets, unreachable, d)
            done += ok
            failed += not ok
    finally:
        for t in targets.values():
            try:
                t.close()
            except Exception:
                pass
    print(f"{done} retried successfully, {failed} still in dead letters")
    return 0 if failed == 0 else 1


def _retry_delivery(cfg: Config, spool: Spool, targets: dict, unreachable: set, d: DeadLetter) -> bool:
    from adapters import build_target

    from .formats import render
    try:
        settings = cfg.target(d.target)
    except KeyError:
        print(f"{d.dl_id}: target {d.target!r} is no longer in the config; add it back or `dlq drop {d.dl_id}`")
        return False
    if not d.body:
        print(f"{d.dl_id}: no event body stored; nothing to send")
        return False
    try:
        target = targets.get(d.target)
        if target is None:
            target = targets[d.target] = build_target(settings)
        ev = rawjson.loads_exact(d.body)            # a json value's 1e400 is valid JSON, not a double
        body = render(d.body, settings.format)
        target.send([SpooledEvent(0, d.event_id or ev.get("id", ""), d.type, str(ev.get("subject", "")), body,
                                  0.0)])
    except TargetRejected as e:
        reason = redact(str(e))
        spool.bump_retries(d.dl_id, reason)
        print(f"{d.dl_id}: {d.target} rejected it again: {reason}")
        return False
    except (TargetError, OSError) as e:
        unreachable.add(d.target)
        spool.bump_retries(d.dl_id, d.reason)
        print(f"{d.dl_id}: {d.target} is unreachable, try again later: {redact(str(e))}")
        return False
    except CdcError as e:
        print(f"{d.dl_id}: {redact(str(e))}")
        return False
    spool.resolve_dead_letter(d.dl_id, d.target)
    print(f"{d.dl_id}: delivered event {d.event_id} to {d.target}")
    return True


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
    added = spool.append(events, [], None, resolves_dead_letter=d.dl_id)     # one transaction: never both, never neither
    print(f"{d.dl_id}: mapped again into {len(events)} event(s) ({', '.join(e.type for e in events) or 'none'}); "
          f"{added} spooled for delivery")
    return True
