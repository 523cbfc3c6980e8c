"""Compatibility of two event catalogs (docs/catalog.md): every change, compatible or breaking for consumers.

The rule: additions are compatible (a new event type, a new optional field); anything that changes what
an existing field may hold is breaking, in either direction: a field removed or renamed, a type changed,
narrowed (events already delivered no longer fit; replays) or widened (a consumer of the old catalog gets
values it does not expect: a larger integer range, null where there was none, a new enum value, which an
exhaustive switch does not handle), a required field added, an event type removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TextIO

_ANNOTATIONS = ("description", "title", "$comment", "examples", "$schema")


@dataclass(frozen=True, slots=True)
class Change:
    event_type: str
    path: str           # the field, dotted ("data.after.price_tier"); "" for the event type itself
    breaking: bool
    text: str


def _strip(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _strip(v) for k, v in schema.items() if k not in _ANNOTATIONS and not k.startswith("x-")}
    if isinstance(schema, list):
        return [_strip(v) for v in schema]
    return schema


def _fields(schema: dict, prefix: str = "") -> tuple[dict[str, dict], dict[str, bool]]:
    """Leaf field schemas by dotted path, and whether each path (leaves and objects) is required."""
    leaves: dict[str, dict] = {}
    required: dict[str, bool] = {}

    def walk(s: dict, path: str) -> None:
        props = s.get("properties")
        if not isinstance(props, dict):
            leaves[path] = s
            return
        req = set(s.get("required", ()))
        rest = {k: v for k, v in s.items() if k not in ("properties", "required")}
        leaves[path + "#"] = rest                     # the object itself: its type, additionalProperties
        for name, sub in props.items():
            p = f"{path}.{name}" if path else name
            required[p] = name in req
            walk(sub if isinstance(sub, dict) else {}, p)
    walk(schema, prefix)
    return leaves, required


def _types(s: dict) -> set[str]:
    t = s.get("type")
    if isinstance(t, str):
        return {t}
    if isinstance(t, list):
        return set(t)
    if "enum" in s:
        return {"null" if v is None else "enum" for v in s["enum"]}
    if "anyOf" in s:
        return set().union(*(_types(x) for x in s["anyOf"]))
    return set()


def _nullable(s: dict) -> bool:
    return "null" in _types(s) or not s


def _describe(old: dict, new: dict) -> str:
    """What kind of change a field's schema went through, in a consumer's words."""
    parts = []
    if _nullable(old) != _nullable(new):
        parts.append("may now be null" if _nullable(new) else "is no longer nullable (narrowed)")
    if "enum" in old or "enum" in new:
        o = {repr(v) for v in old.get("enum", ()) if v is not None}
        n = {repr(v) for v in new.get("enum", ()) if v is not None}
        if o - n:
            parts.append(f"enum value(s) removed: {', '.join(sorted(o - n))}")
        if n - o:
            parts.append(f"enum value(s) added: {', '.join(sorted(n - o))}")
        if not ("enum" in old and "enum" in new):
            parts.append("type changed" + (" (narrowed to an enum)" if "enum" in new else " (no longer an enum)"))
    if ("minimum" in old and "minimum" in new
            and (old.get("minimum"), old.get("maximum")) != (new.get("minimum"), new.get("maximum"))):
        narrowed = new["minimum"] >= old["minimum"] and new.get("maximum", 0) <= old.get("maximum", 0)
        parts.append(f"range {old['minimum']}..{old.get('maximum')} → {new['minimum']}..{new.get('maximum')} "
                     f"({'narrowed' if narrowed else 'widened'})")
    ot, nt = _types(old) - {"null"}, _types(new) - {"null"}
    if ot != nt and "enum" not in old and "enum" not in new:
        how = " (narrowed)" if nt < ot or (nt and not ot) else " (widened)" if ot < nt or (ot and not nt) else ""
        parts.append(f"type changed from {'/'.join(sorted(ot)) or 'any'} to {'/'.join(sorted(nt)) or 'any'}{how}")
    if old.get("pattern") != new.get("pattern") and ot == nt:
        parts.append(f"format changed (pattern {old.get('pattern')!r} → {new.get('pattern')!r})")
    return "; ".join(parts) or "schema changed"


def compare(old: dict[str, dict], new: dict[str, dict]) -> list[Change]:
    changes: list[Change] = []
    for t in sorted(set(old) - set(new)):
        changes.append(Change(t, "", True, f"{t}: event type removed (consumers no longer receive it)"))
    for t in sorted(set(new) - set(old)):
        changes.append(Change(t, "", False, f"{t}: new event type"))
    for t in sorted(set(old) & set(new)):
        o_leaves, o_req = _fields(_strip(old[t]))
        n_leaves, n_req = _fields(_strip(new[t]))
        found: list[Change] = []
        for p in sorted(set(o_req) - set(n_req)):
            if p.rpartition(".")[0] in n_req or "." not in p:
                found.append(Change(t, p, True, f"{t}: field {p} removed"))
        for p in sorted(set(n_req) - set(o_req)):
            if p.rpartition(".")[0] in o_req or "." not in p:
                if n_req[p]:
                    found.append(Change(t, p, True, f"{t}: required field {p} added"))
                else:
                    found.append(Change(t, p, False, f"{t}: optional field {p} added"))
        for p in sorted(set(o_req) & set(n_req)):
            if o_req[p] != n_req[p]:
                found.append(Change(t, p, True, f"{t}: field {p} is " + ("now required" if n_req[p] else
                                                                         "no longer always present")))
        for p in sorted(set(o_leaves) & set(n_leaves)):
            a, b = o_leaves[p], n_leaves[p]
            if a != b:
                field = p.rstrip("#")
                if p.endswith("#"):
                    if a.get("type") != b.get("type"):
                        found.append(Change(t, field, True, f"{t}: {field or 'the event'} {_describe(a, b)}"))
                    continue
                found.append(Change(t, field, True, f"{t}: field {field} {_describe(a, b)}"))
        changes.extend(_merge_before_after(found))
    return changes


def _merge_before_after(found: list[Change]) -> list[Change]:
    """A column's change shows in data.before and data.after alike: say it once."""
    out, seen = [], set()
    for c in found:
        path = c.path
        for side in ("data.before.", "data.after."):
            if path.startswith(side):
                path = "data.before/after." + path[len(side):]
        text = c.text.replace(c.path, path) if c.path else c.text
        k = (c.event_type, path, text)
        if k not in seen:
            seen.add(k)
            out.append(Change(c.event_type, path, c.breaking, text))
    return out


def print_changes(changes: list[Change], out: TextIO) -> int:
    """One line per change; returns the number of breaking ones."""
    breaking = sum(c.breaking for c in changes)
    for c in changes:
        out.write(f"[{'BREAKING' if c.breaking else 'ok'}] {c.text}\n")
    out.write(f"{len(changes)} change(s), {breaking} breaking\n" if changes else "no changes\n")
    return breaking
