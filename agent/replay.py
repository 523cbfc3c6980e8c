"""`cdc-agent replay --target NAME (--since TIME | --from POSITION)` (CONTRACT §5): a target receives again
what the spool still holds from that point, with the same ids; the source database is not touched.

It moves the target's spool cursor back (never forward) and says how many events that re-sends; the
target's worker does the sending: the running agent's right away, else the next `cdc-agent run`. A rewind
under a worker that is delivering a batch wins over that batch's confirmation (see `Spool.advance`).
A point older than what the spool still holds (delivered events are kept `agent.spool_retention_seconds`)
is refused, rather than silently sending less.

TIME: RFC 3339 with a zone (2026-12-01T08:00:00Z, 2026-12-01T09:00:00+01:00), or how long ago: 90s, 15m,
2h, 1d. It selects events by their source commit time. POSITION: a source position exactly as events carry
it (the CloudEvent `position` attribute, `dlq list`).

Exit codes: 0 done (or nothing to re-send), 1 the spool cannot serve it, 2 bad arguments.
"""

from __future__ import annotations

import re
import sys
import time
from datetime import datetime

from .config import Config
from .spool import Spool
from .statelock import unless_agent_runs

_AGO = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now: float | None = None) -> float:
    """TIME as a Unix timestamp; ValueError with the reason when it is neither form."""
    now = time.time() if now is None else now
    m = _AGO.fullmatch(text.strip())
    if m:
        return now - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r} is neither RFC 3339 (2026-12-01T08:00:00Z) nor a duration ago "
                         "(90s, 15m, 2h, 1d)") from None
    if dt.tzinfo is None:
        raise ValueError(f"--since {text!r} has no time zone: add Z or an offset like +01:00")
    return dt.timestamp()


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _err(msg: str, code: int) -> int:
    print(f"cdc-agent: {msg}", file=sys.stderr)
    return code


def replay_command(cfg: Config, args) -> int:
    name = args.target
    try:
        settings = cfg.target(name)
    except KeyError:
        return _err(f"target {name!r} is not in {cfg.path} (targets: {', '.join(t.name for t in cfg.targets)})", 2)
    since = None
    if args.since is not None:
        try:
            since = parse_time(args.since)
        except ValueError as e:
            return _err(str(e), 2)
    Spool(cfg.agent.state_dir, readonly=True).close()     # a clear message when there is no spool yet
    spool = Spool(cfg.agent.state_dir)
    try:
        if name not in {c.name for c in spool.all_counters()}:
            return _err(f"target {name} has not received anything yet: nothing to replay", 1)
        oldest = spool.first_seq_at(since_ts=float("-inf"))
        held = spool.event_at(oldest) if oldest is not None else None
        holds = (f"the oldest event it still holds is at position {held[0]}, committed {_when(held[1])}" if held
                 else "it holds no events now")
        keep = f"delivered events are kept for agent.spool_retention_seconds = {cfg.agent.spool_retention_seconds:g} s"
        pruned = spool.pruned_through()
        if since is not None:
            if pruned is not None and since <= pruned[1]:
                return _err(f"cannot replay since {_when(since)}: the spool no longer holds every event since "
                            f"then ({keep}; {holds}); choose a later point", 1)
            first = spool.first_seq_at(since_ts=since)
            point = f"since {_when(since)}"
        else:
            first = spool.first_seq_at(position=args.from_position)
            if first is None:
                return _err(f"position {args.from_position} is not in the spool (pruned, or not a position of "
                            f"an event of this source; {keep}; {holds})", 1)
            point = f"from position {args.from_position}"
        if first is None:
            print(f"target {name}: no event was committed {point}: nothing to re-send")
            return 0
        with unless_agent_runs(cfg.agent.state_dir) as agent_pid:
            cursor = spool.counters(name).cursor
            if first > cursor:
                print(f"target {name} has not received the events {point} yet (they are pending): nothing to "
                      "re-send; they are delivered as usual")
                return 0
            resend = sum(n for typ, n in spool.types_after(first - 1, cursor).items() if settings.wants(typ))
            spool.rewind(name, first - 1)
            position, commit_ts = spool.event_at(first) or ("?", 0.0)
            print(f"target {name}: re-sending {resend} event(s) from position {position} (committed "
                  f"{_when(commit_ts)}), with their original ids")
            if agent_pid is not None:
                print(f"the running agent (pid {agent_pid}) sends them now")
            else:
                print("the agent is not running: `cdc-agent run` sends them when it starts")
        return 0
    finally:
        spool.close()
