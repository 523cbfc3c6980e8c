"""Row changes → domain events (CloudEvents 1.0, structured JSON), by the `[[events]]` rules.

Rules are compiled once per table. A table that no rule names emits `row.<schema>.<table>` events so that
nothing is dropped silently. A change a rule cannot turn into an event (an unmapped status code, a missing
key column) becomes a dead letter carrying the raw change, so it can be retried after the config is fixed.

The event id is derived from (agent, position, type): the same change always gets the same id, and two
events of one change (two rules on one table) get different ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

from . import fastpath, rawjson
from .changes import RowChange
from .fastrow import RenderedRowChange, RowLayout
from .config import Config, EventRule
from .outbox import OutboxMapper, OutboxUnmappable


@dataclass(slots=True)
class MappedEvent:
    id: str
    type: str
    subject: str
    position: str
    commit_ts: float
    body: bytes            # the CloudEvent as JSON
    outbox_row: tuple[str, dict[str, Any]] | None = None   # (outbox table, row key): for delete_after
    only_target: str | None = None     # snapshot --target: only this target gets it


BODY_SLOT: Any = MappedEvent.__dict__["body"]         # (the slot itself: StoredEvent's `body` shadows it)


class StoredEvent(MappedEvent):
    """A MappedEvent the compiled mapper made (render_events), its body kept in its map call's BodyStore
    with the others' (agent/fastpg_store.c): the body slot holds the store and _at the index; `body` gives
    the bytes, the ones a MappedEvent would hold. A subclass, so that events made in Python keep a plain
    slot (a property there cost ~150 ns per event made and per body read)."""

    __slots__ = ("_at",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._at: int | None = None

    @property
    def body(self) -> bytes:
        at = self._at
        return BODY_SLOT.__get__(self) if at is None else BODY_SLOT.__get__(self).body(at)

    @body.setter
    def body(self, body: bytes) -> None:
        BODY_SLOT.__set__(self, body)
        self._at = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MappedEvent):
            return NotImplemented
        return _fields(self) == _fields(other)

    __hash__ = None       # type: ignore[assignment]


def _fields(e: MappedEvent) -> tuple:
    return e.id, e.type, e.subject, e.position, e.commit_ts, e.body, e.outbox_row, e.only_target


@dataclass(slots=True)
class MappingFailure:
    """A change that could not become an event, for the dead-letter store."""

    event_type: str
    position: str
    reason: str
    change: bytes          # the raw RowChange as JSON, so `dlq retry` can map it again


def event_id(agent: str, position: str, event_type: str) -> str:
    return _blake2b(f"{agent}\x00{position}\x00{event_type}".encode(), digest_size=16).hexdigest()


_blake2b = hashlib.blake2b


def change_to_json(change: RowChange) -> bytes:
    before, after = change.before, change.after
    raw: list[list[str]] = []
    if _has_raw_json(before) or _has_raw_json(after):
        # json values go in as their text, listed in raw_json, so a retried dead letter keeps them as written
        before, after = _raw_json_as_text(before, "before", raw), _raw_json_as_text(after, "after", raw)
    d: dict[str, Any] = {
        "table": change.table, "op": change.op, "before": before, "after": after,
        "position": change.position, "commit_time": change.commit_time, "commit_ts": change.commit_ts,
        "txid": change.txid, "key_columns": list(change.key_columns), "unavailable": list(change.unavailable),
    }
    if raw:
        d["raw_json"] = raw
    if change.id_key is not None:       # a snapshot read: `dlq retry` gives it the same id, for the same target
        d["id_key"] = change.id_key
    if change.target is not None:
        d["target"] = change.target
    return orjson.dumps(d, default=rawjson.default)


def change_from_json(raw: bytes) -> RowChange:
    d = rawjson.loads_exact(raw)          # numbers keep their digits
    for side, col in d.get("raw_json", ()):
        d[side][col] = rawjson.RawJson(d[side][col])
    return RowChange(table=d["table"], op=d["op"], before=d["before"], after=d["after"], position=d["position"],
                     commit_time=d["commit_time"], commit_ts=d["commit_ts"], txid=d["txid"],
                     key_columns=tuple(d["key_columns"]), unavailable=tuple(d["unavailable"]),
                     id_key=d.get("id_key"), target=d.get("target"))


def _has_raw_json(row: dict[str, Any] | None) -> bool:
    return row is not None and any(type(v) is rawjson.RawJson for v in row.values())


def _raw_json_as_text(row: dict[str, Any] | None, side: str, raw: list[list[str]]) -> dict[str, Any] | None:
    if row is None:
        return None
    out = dict(row)
    for c, v in row.items():
        if type(v) is rawjson.RawJson:
            out[c] = v.text
            raw.append([side, c])
    return out


def _subject_part(v: Any) -> str:
    """A key value as text (also the form `values` mappings look codes up by)."""
    if v is None:
        return ""
    if v is True:
        return "true"
    if v is False:
        return "false"
    return v if isinstance(v, str) else str(v)


SUBJECT_NULL = "\\N"        # a NULL key part
SUBJECT_EMPTY = "\\E"       # an empty-string key part (CloudEvents refuses an empty subject)


def subject_part(v: Any) -> str:
    r"""One key value in the subject: never empty, and no two values give the same text, so `|` can join
    them. A backslash and a `|` inside a value are escaped as `\\` and `\|`; NULL is `\N`, '' is `\E`."""
    if v is None:
        return SUBJECT_NULL
    text = _subject_part(v)
    if not text:
        return SUBJECT_EMPTY
    if "\\" in text or "|" in text:
        text = text.replace("\\", "\\\\").replace("|", "\\|")
    return text


_SEGMENT_SAFE = "!$&'()*+,;=:@"      # RFC 3986 sub-delims and ":" "@"; unreserved ones are always kept


def event_source(agent: str, table: str) -> str:
    """`cdc-agent://<agent>/<table>`, a URI-reference whatever the table is called: characters a URI path
    segment cannot hold (space, `/`, `%`, non-ASCII, ...) are percent-encoded as UTF-8, so
    "public.customers" stays as it is and "public.Order Items" becomes "public.Order%20Items"."""
    return f"cdc-agent://{agent}/{quote(table, safe=_SEGMENT_SAFE)}"


class _CompiledRule:
    __slots__ = ("type", "on", "changed", "key", "fields", "values", "source", "plans")

    def __init__(self, rule: EventRule, source: str):
        self.type = rule.type
        self.on = rule.on | ({"read"} if "insert" in rule.on else set())   # snapshot rows count as inserts
        self.changed = frozenset(rule.changed) if rule.changed else None
        self.key = rule.key
        self.fields = rule.fields
        self.values = rule.values
        self.source = source
        self.plans: dict[Any, tuple | None] = {}   # the compiled core's plan per row layout (None: pure path)


class _Unmappable(Exception):
    pass


class EventMapper:
    def __init__(self, cfg: Config, pure: bool | None = None):
        self.agent = cfg.agent.name
        self.rules: dict[str, list[_CompiledRule]] = {}
        self.outbox = {o.table: OutboxMapper(o, self.agent) for o in cfg.outbox}
        # the compiled core for changes that are not RenderedRowChanges: None on the pure path (pure=True, or
        # None and CDC_AGENT_PURE=1)
        self._render_dicts = fastpath.dict_renderer(pure)
        self._dict_layouts: dict[str, tuple[RowLayout | None, tuple[str, ...], int]] = {}
        # runs of RenderedRowChanges are mapped in one C call (agent/fastpg_glue.c): its rules per row layout
        self._render_events = fastpath.events_renderer()
        self._body_store = fastpath.body_store or _no_store
        self._runs: dict[RowLayout, tuple | None] = {}
        for table in cfg.source.tables:
            if table in self.outbox:
                continue                  # an outbox table emits the events its rows describe (agent/outbox.py)
            src = event_source(self.agent, table)
            named = [r for r in cfg.events if r.table == table]
            if named:
                self.rules[table] = [_CompiledRule(r, src) for r in named]
            else:
                self.rules[table] = [_CompiledRule(EventRule(type=f"row.{table}", table=table), src)]

    def map(self, changes: list[RowChange]) -> tuple[list[MappedEvent], list[MappingFailure]]:
        """Events and dead letters of `changes`. On the compiled path (agent/fastpath.py) each rule's event is
        rendered in C where it can be, byte for byte what _event writes; elsewhere _event writes it."""
        events: list[MappedEvent] = []
        failures: list[MappingFailure] = []
        render_run = self._render_events
        store = None        # the bodies of the events render_run makes (agent/fastpg_store.c), from the first
        i, n = 0, len(changes)
        while i < n:
            ch = changes[i]
            i += 1
            if render_run is not None and type(ch) is RenderedRowChange:
                run = self._runs.get(ch.layout, _UNSET)
                if run is _UNSET:
                    run = self._run_rules(ch)
                if run is not None:
                    # this change and the ones after it of the same layout, while C can map them all
                    if store is None:
                        store = self._body_store()
                    j = render_run(changes, i - 1, run, events, store)
                    if j >= i:
                        i = j
                        continue
            if ch.table in self.outbox:
                self._outbox_event(self.outbox[ch.table], ch, events, failures)
                continue
            rules = self.rules.get(ch.table)
            if rules is None:
                failures.append(MappingFailure(f"row.{ch.table}", ch.position,
                                               f"table {ch.table} is not in source.tables", change_to_json(ch)))
                continue
            if type(ch) is RenderedRowChange:
                self._rendered_events(rules, ch, ch.rendered, ch.layout, events, failures)
                continue
            if self._render_dicts is not None and ch.id_key is None and ch.target is None and not ch.unavailable:
                made = self._dict_events(rules, ch, events, failures)
                if made:
                    continue
            changed_cols = _changed_columns(ch)
            for rule in rules:
                if ch.op not in rule.on:
                    continue
                if rule.changed is not None and changed_cols is not None and ch.op == "update" \
                        and rule.changed.isdisjoint(changed_cols):
                    continue
                try:
                    events.append(self._event(rule, ch, changed_cols))
                except _Unmappable as e:
                    failures.append(MappingFailure(rule.type, ch.position, str(e), change_to_json(ch)))
                # any other exception is a bug in the rules' evaluation, not a bad row: it propagates, and
                # the capture loop stops with its traceback instead of dead-lettering every change
        return events, failures

    def _dict_events(self, rules: list[_CompiledRule], ch: RowChange, events: list[MappedEvent],
                     failures: list[MappingFailure]) -> bool:
        """Any other source's change, through the same C renderer: its row dicts rendered as JSON text
        (render_dicts) against the table's column layout, learnt from its changes. False: the pure path."""
        render = self._render_dicts
        assert render is not None       # (map calls this only on the compiled path)
        known = self._dict_layouts.get(ch.table)
        rendered = None
        if known is not None and known[1] == ch.key_columns:
            if known[0] is None:
                return False            # this table's changes do not keep one layout: pure path
            rendered = render(ch.op, ch.before, ch.after, known[0].names)
        if rendered is None:            # first change of the table, a new layout, or values C does not write
            row = ch.after if ch.after is not None else ch.before
            if row is None or (known is not None and known[0] is not None and tuple(row) == known[0].names):
                return False
            changes = known[2] + 1 if known is not None else 0
            if known is not None and known[0] is not None:
                for rule in rules:      # plans of the old layout go with it
                    rule.plans.pop(known[0], None)
            layout = RowLayout(tuple(row), ()) if changes < DICT_LAYOUT_CHANGES else None
            self._dict_layouts[ch.table] = (layout, ch.key_columns, changes)
            if layout is None:
                return False
            rendered = render(ch.op, ch.before, ch.after, layout.names)
            if rendered is None:
                return False
            known = self._dict_layouts[ch.table]
        assert known is not None and known[0] is not None
        self._rendered_events(rules, ch, rendered, known[0], events, failures)
        return True

    def _plan(self, rule: _CompiledRule, ch: RowChange, layout: RowLayout) -> tuple | None:
        plan = rule.plans.get(layout, _UNSET)
        if plan is _UNSET:
            plan = rule.plans[layout] = None if rule.values else fastpath.event_plan(
                self.agent, rule.type, rule.source, layout.names, rule.key or ch.key_columns,
                layout.key_index, rule.fields, rule.changed)
        return plan

    def _run_rules(self, ch: RenderedRowChange) -> tuple | None:
        """What render_events needs for the changes of ch's layout: (layout, (plan, op bits, type) per rule),
        or None when a rule needs the pure path for all of them (values maps, a key the C path does not
        render) or the table is not mapped by rules (an outbox, a table not in source.tables)."""
        layout = ch.layout
        rules = None if ch.table in self.outbox else self.rules.get(ch.table)
        run: tuple | None = None
        if rules and len(rules) <= RUN_RULES:
            parts: list[tuple] | None = []
            for rule in rules:
                plan = self._plan(rule, ch, layout)
                if plan is None or parts is None:
                    parts = None
                    break
                bits = ("insert" in rule.on) | ("update" in rule.on) << 1 | ("delete" in rule.on) << 2
                parts.append((plan, bits, rule.type))
            if parts is not None:
                run = (layout, *parts)
        self._runs[layout] = run
        return run

    def _rendered_events(self, rules: list[_CompiledRule], ch: RowChange, rendered: bytes, layout: RowLayout,
                         events: list[MappedEvent], failures: list[MappingFailure]) -> None:
        """The events of a row the compiled core rendered: each rule's body and id rendered in C from the row's
        JSON text (agent/fastpg_event.c), the same bytes _event writes; a rule or a change it cannot render
        goes through _event."""
        op = ch.op
        changed_cols: Any = _UNSET
        for rule in rules:
            if op not in rule.on:
                continue
            plan = self._plan(rule, ch, layout)
            if plan is not None:
                made = fastpath.render_event(rendered, plan, ch.position, ch.commit_time, ch.txid)
                if made is None:
                    continue                # the rule's `changed` columns did not change
                if type(made) is tuple:
                    eid, subject, body = made
                    events.append(MappedEvent(eid, rule.type, subject, ch.position, ch.commit_ts, body))
                    continue
            if changed_cols is _UNSET:
                changed_cols = _changed_columns(ch)
            if rule.changed is not None and changed_cols is not None and op == "update" \
                    and rule.changed.isdisjoint(changed_cols):
                continue
            try:
                events.append(self._event(rule, ch, changed_cols))
            except _Unmappable as e:
                failures.append(MappingFailure(rule.type, ch.position, str(e), change_to_json(ch)))

    @staticmethod
    def _outbox_event(mapper: OutboxMapper, ch: RowChange, events: list[MappedEvent],
                      failures: list[MappingFailure]) -> None:
        try:
            made = mapper.event(ch)
        except OutboxUnmappable as e:
            failures.append(MappingFailure(f"outbox.{ch.table}", ch.position, str(e), change_to_json(ch)))
            return
        if made is not None:
            eid, typ, subject, body, key = made
            events.append(MappedEvent(eid, typ, subject, ch.position, ch.commit_ts, body, (ch.table, key)))

    def _event(self, rule: _CompiledRule, ch: RowChange, changed_cols: set[str] | None) -> MappedEvent:
        row = ch.after if ch.after is not None else ch.before
        if row is None:
            raise _Unmappable(f"{ch.op} on {ch.table} carries no row image")
        key_cols = rule.key or ch.key_columns
        if not key_cols:
            raise _Unmappable(f"{ch.table} has no primary key and the rule sets no key")
        key = {}
        for c in key_cols:
            if c in row:
                key[c] = row[c]
            elif ch.before is not None and c in ch.before:
                key[c] = ch.before[c]
            else:
                raise _Unmappable(f"key column {c!r} is not in the row of {ch.table}")
        if len(key_cols) == 1:          # the common case, without a generator and a join
            v = key[key_cols[0]]
            subject = v if type(v) is str and v and "|" not in v and "\\" not in v else subject_part(v)
        else:
            subject = "|".join(subject_part(key[c]) for c in key_cols)
        before = self._project(rule, ch.before)
        after = self._project(rule, ch.after)
        if ch.op in ("update",) and changed_cols is not None:
            assert ch.after is not None     # an update always carries its new row
            changed = _changed_out_names(rule, changed_cols, ch.after)
        elif ch.op == "update":
            changed = None    # no old image (REPLICA IDENTITY DEFAULT): which columns changed is unknown
        else:
            changed = [out for out, _ in rule.fields] if rule.fields else list(row)
        data: dict[str, Any] = {"op": ch.op, "key": key, "before": before, "after": after, "changed": changed}
        if ch.unavailable:
            names = _out_names(rule, ch.unavailable)
            if names:
                data["unavailable"] = names
        eid = event_id(self.agent, ch.id_key or ch.position, rule.type)
        body = orjson.dumps({
            "specversion": "1.0", "id": eid, "source": rule.source, "type": rule.type, "subject": subject,
            "time": ch.commit_time, "datacontenttype": "application/json", "position": ch.position,
            "txid": ch.txid, "data": data,
        }, default=rawjson.default)       # json/jsonb values (RawJson) go in as the database wrote them
        return MappedEvent(eid, rule.type, subject, ch.position, ch.commit_ts, body, only_target=ch.target)

    @staticmethod
    def _project(rule: _CompiledRule, row: dict[str, Any] | None) -> dict[str, Any] | None:
        if row is None:
            return None
        if rule.values:
            row = dict(row)
            for col, mapping in rule.values.items():
                if col in row and row[col] is not None:
                    raw = _subject_part(row[col])
                    if raw not in mapping:
                        raise _Unmappable(f"column {col} has code {_cut(repr(raw))} with no mapping in the values of "
                                          f"rule {rule.type} (known: {', '.join(sorted(mapping))})")
                    row[col] = mapping[raw]
        if rule.fields is None:
            return row
        return {out: row[col] for out, col in rule.fields if col in row}


def _no_store() -> None:
    return None


_UNSET: Any = object()
RUN_RULES = 64                # at most this many rules on a table for render_events (agent/fastpg_glue.c)
DICT_LAYOUT_CHANGES = 50      # a table whose row dicts changed layout this often is left to the pure path

REASON_VALUE = 200       # characters of a row value quoted in a dead-letter reason (the raw change has it all)


def _cut(text: str) -> str:
    return text if len(text) <= REASON_VALUE else text[:REASON_VALUE] + "…"


def _changed_columns(ch: RowChange) -> set[str] | None:
    """Columns whose value differs between the old and new image; None when there is no old image."""
    if ch.op != "update":
        return None
    if not ch.before or ch.after is None:
        return None
    before, after = ch.before, ch.after
    missing = ch.unavailable
    return {c for c, v in after.items() if c not in missing and (c not in before or before[c] != v)}


def _changed_out_names(rule: _CompiledRule, changed_cols: set[str], after: dict[str, Any]) -> list[str]:
    if rule.fields is None:
        return [c for c in after if c in changed_cols]     # in column order
    return [out for out, col in rule.fields if col in changed_cols]


def _out_names(rule: _CompiledRule, cols: tuple[str, ...]) -> list[str]:
    if rule.fields is None:
        return list(cols)
    wanted = set(cols)
    return [out for out, col in rule.fields if col in wanted]
