"""Pure decoder for PostgreSQL's `pgoutput` logical replication protocol (version 1) and for the framing
of the streaming replication protocol around it. Bytes in, messages out: no I/O, no clock.

pgoutput messages (https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html):
    B Begin     final_lsn (= the commit record's LSN), commit time, xid
    C Commit    flags, commit_lsn, end_lsn (end of the commit record), commit time
    O Origin    origin's commit LSN, origin name
    R Relation  relid, schema, name, replica identity, columns (flags, name, type oid, typmod)
    Y Type      type oid, schema, name (sent for non-built-in types before the Relation using them)
    I Insert    relid, 'N' + new tuple
    U Update    relid, ['K' key | 'O' old tuple], 'N' + new tuple
    D Delete    relid, 'K' key | 'O' old tuple
    T Truncate  relids, options (1 CASCADE, 2 RESTART IDENTITY)
    M Message   flags (1 transactional), lsn, prefix, content  (pg_logical_emit_message, `messages 'true'`)
Tuple data: per column 'n' NULL, 'u' unchanged TOAST value (not in the log), 't' text, 'b' binary.

The decoder is on the hot path (every row change passes here), hence: one `bytes` per message, precompiled
Structs, no object per column, and column values converted by per-relation converter callables while the
tuple is parsed (a converter gets the column's text-format *bytes*; `bytes.decode` is the plain-text one,
`int` works on bytes directly). Relations are cached by the decoder, because pgoutput sends each Relation
once per session (again after a schema change) and later rows only carry the relation id.

Replication framing (CopyData payloads on a `START_REPLICATION ... LOGICAL` connection):
    w XLogData           start lsn, wal end, send time, then one pgoutput message
    k Primary keepalive  wal end, send time, reply requested
    r Standby status     written / flushed / applied lsn, client time, reply requested (client → server)
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, UTC
from collections.abc import Callable, Sequence
from typing import Any

from . import fastpath

# microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 00:00:00 UTC)
PG_EPOCH_UNIX = 946_684_800
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


Converter = Callable[[bytes], Any]


class _Unchanged:
    """Marker for a TOASTed value the log does not carry ('u'): never a value, never a placeholder string."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHANGED"

    def __reduce__(self) -> str:
        return "UNCHANGED"


UNCHANGED = _Unchanged()


class DecodeError(ValueError):
    """Bytes that are not a valid pgoutput / replication message (truncated, unknown kind, unknown relation)."""


# ---------------------------------------------------------------- structs

_B = struct.Struct(">b")
_u8 = struct.Struct(">B")
_I16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_Q = struct.Struct(">Q")
_BEGIN = struct.Struct(">QqI")               # final_lsn, commit time, xid
_COMMIT = struct.Struct(">BQQq")             # flags, commit_lsn, end_lsn, commit time
_REL_HEAD = struct.Struct(">I")
_COL_TAIL = struct.Struct(">Ii")             # type oid, typmod
_TRUNC = struct.Struct(">IB")                # nrelations, options
_MSG_HEAD = struct.Struct(">BQ")             # flags, lsn
_XLOG = struct.Struct(">QQq")                # 'w': start, wal end, send time
_KEEPALIVE = struct.Struct(">QqB")           # 'k': wal end, send time, reply requested
_STATUS = struct.Struct(">cQQQqB")           # 'r': write, flush, apply, client time, reply requested

_u32_from = _U32.unpack_from
_i16_from = _I16.unpack_from
_DECODE = bytes.decode


# ---------------------------------------------------------------- messages


class Begin:
    __slots__ = ("final_lsn", "commit_time", "xid")
    kind = "B"

    def __init__(self, final_lsn: int, commit_time: int, xid: int):
        self.final_lsn, self.commit_time, self.xid = final_lsn, commit_time, xid

    def __repr__(self) -> str:
        return f"Begin(final_lsn={lsn_text(self.final_lsn)}, commit_time={self.commit_time}, xid={self.xid})"


class Commit:
    __slots__ = ("flags", "commit_lsn", "end_lsn", "commit_time")
    kind = "C"

    def __init__(self, flags: int, commit_lsn: int, end_lsn: int, commit_time: int):
        self.flags, self.commit_lsn, self.end_lsn, self.commit_time = flags, commit_lsn, end_lsn, commit_time

    def __repr__(self) -> str:
        return f"Commit(commit_lsn={lsn_text(self.commit_lsn)}, end_lsn={lsn_text(self.end_lsn)})"


class Origin:
    __slots__ = ("lsn", "name")
    kind = "O"

    def __init__(self, lsn: int, name: str):
        self.lsn, self.name = lsn, name


class Column:
    __slots__ = ("name", "type_oid", "typmod", "key")

    def __init__(self, name: str, type_oid: int, typmod: int, key: bool):
        self.name, self.type_oid, self.typmod, self.key = name, type_oid, typmod, key

    def __repr__(self) -> str:
        return f"Column({self.name!r}, {self.type_oid}, {self.typmod}, key={self.key})"


class Relation:
    """A table as pgoutput describes it. `converters` (one callable per column, text bytes -> JSON form) and
    `names` are what tuple decoding uses; the caller may replace `converters` (see Decoder.set_converters).
    `info` is free for the caller (e.g. the primary key it looked up)."""

    __slots__ = ("oid", "namespace", "name", "replica_identity", "columns", "names", "_converters", "_kinds", "info")
    kind = "R"

    def __init__(self, oid: int, namespace: str, name: str, replica_identity: str, columns: tuple[Column, ...]):
        self.oid, self.namespace, self.name = oid, namespace, name
        self.replica_identity = replica_identity      # 'd' default, 'n' nothing, 'f' full, 'i' index
        self.columns = columns
        self.names = tuple(c.name for c in columns)
        self.converters = (_DECODE,) * len(columns)
        self.info: Any = None       # the caller's (the PostgreSQL source keeps its _RelMeta here)

    @property
    def converters(self) -> tuple[Converter, ...]:
        return self._converters

    @converters.setter
    def converters(self, converters: Sequence[Converter]) -> None:
        # the kind bytes the compiled decoder uses always follow the converters (agent/fastpath.py)
        self._converters = tuple(converters)
        self._kinds = fastpath.kinds(self._converters)

    @property
    def kinds(self) -> bytes:
        """The compiled decoder's kind byte per column (agent/fastpath.py), following the converters."""
        return self._kinds

    @property
    def qualified(self) -> str:
        return f"{self.namespace}.{self.name}"

    @property
    def key_names(self) -> tuple[str, ...]:
        """Columns flagged as part of the replica identity (all of them under REPLICA IDENTITY FULL)."""
        return tuple(c.name for c in self.columns if c.key)

    def __repr__(self) -> str:
        return f"Relation({self.oid}, {self.qualified}, identity={self.replica_identity!r}, {list(self.columns)})"


class Type:
    __slots__ = ("oid", "namespace", "name")
    kind = "Y"

    def __init__(self, oid: int, namespace: str, name: str):
        self.oid, self.namespace, self.name = oid, namespace, name


class Insert:
    __slots__ = ("relation", "new")
    kind = "I"
    rendered = None

    def __init__(self, relation: Relation, new: list[Any]):
        self.relation, self.new = relation, new


class Update:
    """`old_kind`: 'O' the whole old row (REPLICA IDENTITY FULL), 'K' only the key columns (the key changed;
    the other positions are None), None when the log has no old image."""

    __slots__ = ("relation", "old_kind", "old", "new")
    kind = "U"
    rendered = None

    def __init__(self, relation: Relation, old_kind: str | None, old: list[Any] | None, new: list[Any]):
        self.relation, self.old_kind, self.old, self.new = relation, old_kind, old, new


class Delete:
    __slots__ = ("relation", "old_kind", "old")
    kind = "D"
    rendered = None

    def __init__(self, relation: Relation, old_kind: str, old: list[Any]):
        self.relation, self.old_kind, self.old = relation, old_kind, old


class Truncate:
    __slots__ = ("relations", "cascade", "restart_identity")
    kind = "T"

    def __init__(self, relations: tuple[Relation, ...], cascade: bool, restart_identity: bool):
        self.relations, self.cascade, self.restart_identity = relations, cascade, restart_identity


class Message:
    __slots__ = ("transactional", "lsn", "prefix", "content")
    kind = "M"

    def __init__(self, transactional: bool, lsn: int, prefix: str, content: bytes):
        self.transactional, self.lsn, self.prefix, self.content = transactional, lsn, prefix, content


class RenderedRow:
    """An Insert ('I'), Update ('U') or Delete ('D') whose values the compiled core rendered as JSON text
    (`rendered`, agent/_fastpg.c's render_row). `decoded()` is the same message decoded on the usual path,
    with the relation it was rendered with (a later Relation message does not change it)."""

    __slots__ = ("kind", "relation", "rendered", "buf", "pos", "_decoder")

    def __init__(self, kind: str, relation: Relation, rendered: bytes, buf: bytes, pos: int, decoder: Decoder):
        self.kind, self.relation, self.rendered, self.buf, self.pos = kind, relation, rendered, buf, pos
        self._decoder = decoder

    def decoded(self) -> Any:
        return self._decoder.row_message(self.buf, self.pos, self.relation)

    # what the decoded message has, for callers that read the values themselves
    @property
    def new(self) -> list[Any] | None:
        return getattr(self.decoded(), "new", None)

    @property
    def old(self) -> list[Any] | None:
        return getattr(self.decoded(), "old", None)

    @property
    def old_kind(self) -> str | None:
        return getattr(self.decoded(), "old_kind", None)


_ROW_KINDS = {73: "I", 85: "U", 68: "D"}


# ---------------------------------------------------------------- decoding


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(0, pos)
    return buf[pos:end].decode(), end + 1


def decode_tuple(buf: bytes, pos: int, converters: Sequence[Converter],
                 kinds: bytes = b"") -> tuple[list[Any], int]:
    """TupleData at `pos` -> (values, position after it). 't' values go through the column's converter,
    'n' is None, 'u' is UNCHANGED, 'b' (binary format) stays bytes. `kinds` is for the compiled twin of
    this function (agent/_fastpg.c, same signature and results); the pure path ignores it."""
    (n,) = _i16_from(buf, pos)
    pos += 2
    if n > len(converters):
        raise DecodeError(f"tuple has {n} columns, the relation {len(converters)}")
    out: list[Any] = [None] * n
    for i in range(n):
        k = buf[pos]
        if k == 116:                     # 't'
            (ln,) = _u32_from(buf, pos + 1)
            pos += 5
            out[i] = converters[i](buf[pos:pos + ln])
            pos += ln
        elif k == 110:                   # 'n'
            pos += 1
        elif k == 117:                   # 'u'
            out[i] = UNCHANGED
            pos += 1
        elif k == 98:                    # 'b'
            (ln,) = _u32_from(buf, pos + 1)
            pos += 5
            out[i] = buf[pos:pos + ln]
            pos += ln
        else:
            raise DecodeError(f"unknown tuple column kind {chr(k)!r} at byte {pos}")
    if pos > len(buf):
        raise DecodeError("tuple data is truncated")
    return out, pos


class Decoder:
    """Decodes pgoutput messages and keeps the relations of the current session.

    `decode(buf, pos)` takes the message starting at `pos` (25 for an XLogData payload, 0 for a row of
    pg_logical_slot_*_binary_changes). Row messages for a relation the session has not described raise
    DecodeError (pgoutput always sends the Relation first).

    Tuples are decoded by the compiled core when it is there (agent/fastpath.py), else by decode_tuple
    above; `pure=True` forces the latter, `pure=False` the former when built (None: CDC_AGENT_PURE decides).
    On the compiled path a row message comes back as a RenderedRow (its values as JSON text) whenever the
    core could render it, else as the Insert / Update / Delete the pure path makes."""

    def __init__(self, pure: bool | None = None) -> None:
        self.relations: dict[int, Relation] = {}
        self._decode_tuple = fastpath.tuple_decoder(DecodeError, UNCHANGED, pure) or decode_tuple
        self._render = fastpath.row_renderer(pure)

    @property
    def renders(self) -> bool:
        """Whether row messages are rendered by the compiled core (not the pure path)."""
        return self._render is not None

    def reset(self) -> None:
        """A new session (reconnect): pgoutput sends every Relation again."""
        self.relations.clear()

    def set_converters(self, relid: int, converters: Sequence[Converter]) -> None:
        rel = self.relations[relid]
        if len(converters) != len(rel.columns):
            raise ValueError(f"{len(converters)} converters for {len(rel.columns)} columns")
        rel.converters = converters

    def _rel(self, relid: int) -> Relation:
        try:
            return self.relations[relid]
        except KeyError:
            raise DecodeError(f"row for relation {relid}, which this session has not described") from None

    def decode(self, buf: bytes, pos: int = 0) -> Any:
        # one of Begin, Commit, Relation, Type, Insert, Update, Delete, Truncate, Message, Origin: Any, as
        # callers tell them apart by their `kind` (a str compare, cheaper than isinstance on the hot path)
        try:
            k = buf[pos]
        except IndexError:
            raise DecodeError("empty message") from None
        try:
            if k == 73 or k == 85 or k == 68:                    # 'I' 'U' 'D'
                (relid,) = _u32_from(buf, pos + 1)
                rel = self.relations.get(relid) or self._rel(relid)
                render = self._render
                if render is not None and type(buf) is bytes:
                    rendered = render(buf, pos, rel._converters, rel._kinds)
                    if rendered is not None:
                        return RenderedRow(_ROW_KINDS[k], rel, rendered, buf, pos, self)
                return self.row_message(buf, pos, rel)
            if k == 66:                                          # 'B'
                return Begin(*_BEGIN.unpack_from(buf, pos + 1))
            if k == 67:                                          # 'C'
                return Commit(*_COMMIT.unpack_from(buf, pos + 1))
            if k == 82:                                          # 'R'
                return self._relation(buf, pos + 1)
            if k == 89:                                          # 'Y'
                (oid,) = _REL_HEAD.unpack_from(buf, pos + 1)
                ns, p = _cstring(buf, pos + 5)
                name, _ = _cstring(buf, p)
                return Type(oid, ns, name)
            if k == 84:                                          # 'T'
                n, opts = _TRUNC.unpack_from(buf, pos + 1)
                p = pos + 6
                rels = tuple(self._rel(_u32_from(buf, p + 4 * i)[0]) for i in range(n))
                if p + 4 * n > len(buf):
                    raise DecodeError("truncate message is truncated")
                return Truncate(rels, bool(opts & 1), bool(opts & 2))
            if k == 77:                                          # 'M'
                flags, lsn = _MSG_HEAD.unpack_from(buf, pos + 1)
                prefix, p = _cstring(buf, pos + 10)
                (ln,) = _U32.unpack_from(buf, p)
                content = bytes(buf[p + 4:p + 4 + ln])
                if len(content) != ln:
                    raise DecodeError("message content is truncated")
                return Message(bool(flags & 1), lsn, prefix, content)
            if k == 79:                                          # 'O'
                (lsn,) = _Q.unpack_from(buf, pos + 1)
                name, _ = _cstring(buf, pos + 9)
                return Origin(lsn, name)
        except (struct.error, IndexError, ValueError, UnicodeDecodeError) as e:
            if isinstance(e, DecodeError):
                raise
            raise DecodeError(f"malformed {chr(k)!r} message: {e}") from None
        raise DecodeError(f"unknown pgoutput message kind {chr(k)!r} (0x{k:02x})")

    def row_message(self, buf: bytes, pos: int, rel: Relation) -> Any:
        """The Insert, Update or Delete at `pos`, its tuples decoded with `rel`'s converters."""
        try:
            k = buf[pos]
            if k == 73:                                          # 'I'
                if buf[pos + 5] != 78:
                    raise DecodeError(f"insert: expected 'N', got {chr(buf[pos + 5])!r}")
                new, _ = self._decode_tuple(buf, pos + 6, rel._converters, rel._kinds)
                return Insert(rel, new)
            if k == 85:                                          # 'U'
                p = pos + 5
                t = buf[p]
                old_kind = old = None
                if t == 75 or t == 79:                           # 'K' | 'O'
                    old_kind = "K" if t == 75 else "O"
                    old, p = self._decode_tuple(buf, p + 1, rel._converters, rel._kinds)
                    t = buf[p]
                if t != 78:
                    raise DecodeError(f"update: expected 'N', got {chr(t)!r}")
                new, _ = self._decode_tuple(buf, p + 1, rel._converters, rel._kinds)
                return Update(rel, old_kind, old, new)
            t = buf[pos + 5]                                     # 'D'
            if t != 75 and t != 79:
                raise DecodeError(f"delete: expected 'K' or 'O', got {chr(t)!r}")
            old, _ = self._decode_tuple(buf, pos + 6, rel._converters, rel._kinds)
            return Delete(rel, "K" if t == 75 else "O", old)
        except (struct.error, IndexError, ValueError, UnicodeDecodeError) as e:
            if isinstance(e, DecodeError):
                raise
            raise DecodeError(f"malformed {chr(buf[pos])!r} message: {e}") from None

    def _relation(self, buf: bytes, p: int) -> Relation:
        (oid,) = _REL_HEAD.unpack_from(buf, p)
        ns, p = _cstring(buf, p + 4)
        name, p = _cstring(buf, p)
        ident = chr(buf[p])
        (ncols,) = _I16.unpack_from(buf, p + 1)
        p += 3
        cols = []
        for _ in range(ncols):
            flags = buf[p]
            cname, p = _cstring(buf, p + 1)
            typ, typmod = _COL_TAIL.unpack_from(buf, p)
            p += 8
            cols.append(Column(cname, typ, typmod, bool(flags & 1)))
        rel = Relation(oid, ns, name, ident, tuple(cols))
        self.relations[oid] = rel
        return rel


# ---------------------------------------------------------------- replication framing


class XLogData:
    """A 'w' frame: the pgoutput message starts at `DATA_OFFSET` of the same buffer."""

    __slots__ = ("start_lsn", "wal_end", "send_time")
    DATA_OFFSET = 25

    def __init__(self, start_lsn: int, wal_end: int, send_time: int):
        self.start_lsn, self.wal_end, self.send_time = start_lsn, wal_end, send_time


class Keepalive:
    __slots__ = ("wal_end", "send_time", "reply_requested")

    def __init__(self, wal_end: int, send_time: int, reply_requested: bool):
        self.wal_end, self.send_time, self.reply_requested = wal_end, send_time, reply_requested


def parse_xlogdata(buf: bytes) -> XLogData:
    if len(buf) < 25 or buf[0] != 119:
        raise DecodeError("not an XLogData ('w') frame")
    return XLogData(*_XLOG.unpack_from(buf, 1))


def parse_keepalive(buf: bytes) -> Keepalive:
    if len(buf) < 18 or buf[0] != 107:
        raise DecodeError("not a primary keepalive ('k') frame")
    wal_end, t, reply = _KEEPALIVE.unpack_from(buf, 1)
    return Keepalive(wal_end, t, bool(reply))


def standby_status(written: int, flushed: int, applied: int, now_us: int, reply: bool = False) -> bytes:
    """The 'r' message a client sends: `flushed` is what the slot may release (confirmed_flush_lsn).
    `now_us`: microseconds since 2000-01-01 UTC (see pg_time_from_unix)."""
    return _STATUS.pack(b"r", written, flushed, applied, now_us, 1 if reply else 0)


# ---------------------------------------------------------------- LSNs and times


def lsn_text(lsn: int) -> str:
    """PostgreSQL's own spelling: '16/B374D848'."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """'16/B374D848' -> int."""
    hi, sep, lo = text.partition("/")
    if not sep:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(hi, 16) << 32) | int(lo, 16)


def lsn_hex16(lsn: int) -> str:
    """Fixed width, sorts like the LSN: what positions and checkpoints carry."""
    return f"{lsn:016X}"


def pg_time_to_unix(us: int) -> float:
    """PostgreSQL timestamp (microseconds since 2000-01-01 UTC) -> Unix epoch seconds."""
    return us / 1_000_000 + PG_EPOCH_UNIX


def pg_time_from_unix(t: float) -> int:
    return int((t - PG_EPOCH_UNIX) * 1_000_000)


def pg_time_rfc3339(us: int) -> str:
    """PostgreSQL timestamp -> 'YYYY-MM-DDTHH:MM:SS.ffffffZ' (exact: integer arithmetic, no float)."""
    return (PG_EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
