"""Spool frames: the events of one source batch packed into one spool row (agent/spool.py). Pure: bytes in,
bytes out, no I/O.

A frame holds n events that take the consecutive spool numbers seq .. seq + n - 1 (a cursor is such a
number, so it can point inside a frame). It is stored as two compressed blobs:

- `head`: JSON `[format, types, type_of_each, ids, id_offsets, subjects, positions, commit_ts, body_lengths]`:
  what delivery needs about each event without parsing its body. An event type is stored once per frame
  (`types`; `type_of_each` is 0 when the frame has one type, else the index of each event's type).
- `body`: the CloudEvent bodies, concatenated, each with its `id` cut out (its offset is in `id_offsets`,
  -1 when the body does not contain it): the id is the one part of a body that does not compress (random
  hex), so it is stored once, in the head; the reader puts it back where it was, byte for byte.

Format 2 (written since issue #19): both blobs are zstd frames, level 1, with zstd's content checksum (a
damaged blob is an error, never wrong events, as zlib's adler32 made it in format 1). Format 1: zlib level 1;
still read, so a spool an older agent left behind is delivered after an upgrade. The blob's first bytes say
which (a zstd frame starts with its magic number, a zlib stream never does), and the head's format must agree.

Why zstd level 1 (docs/performance.md): on the drain's events (730-byte CloudEvents) it compresses a frame in
~0.67 µs per event where zlib level 1 took ~2 µs, to a third fewer bytes (~67 per event, head included), and a
frame decodes for delivery ~2.7x faster; level 3 is slower and no smaller on them. Level 1's parameters are
narrowed for frames (`PARAMS`): a 128 kB window and 4096-entry hash table instead of the 512 kB and 8192
level 1 picks for a ~700 kB frame, ~18% less CPU for the same size on those events. The compressor and
decompressor contexts are reused (a FrameCodec per Spool: they are not thread-safe, and a Spool belongs to one
thread). Kept separate from `head` so that counting, replay lookups and the dashboard's event search read the
small head, not the bodies.

The per-event work of `pack` is compiled when the `_fastpg` extension is built (agent/fastpg_frame.c, 0.15 µs
per event instead of ~0.7); `_fields_pure` is the fallback and the reference, byte for byte. The compiled
mapper's events (StoredEvents) keep their bodies in one buffer with the ids cut out already
(agent/fastpg_store.c): a frame of them is compressed from that buffer as it is.
"""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Callable, Sequence
from itertools import accumulate, repeat
from operator import sub
from typing import Any

import orjson
import zstandard

from .interfaces import SpooledEvent

FORMAT = 2                 # what pack writes: zstd
ZLIB_FORMAT = 1            # read only: frames of an agent before format 2
# zstd's level 1 (strategy "fast", min_match 6) with a smaller window and hash table, and the content checksum:
# level 1 sizes its window and hash table for the input (512 kB and 8192 entries for a frame of ~700 kB of
# bodies); a 128 kB window and 4096 entries compress the drain's frames to the same bytes per event (45.8 of
# bodies, 22 of head) in ~0.60 instead of ~0.72 µs per event (bench.spool_pack; the tables stay in the L1/L2
# caches). Matches further back than 128 kB hardly ever occur: a frame's bodies repeat their neighbours'. Any
# zstd decoder reads the frames (the window is in the frame header); older agents of format 2 included.
PARAMS = zstandard.ZstdCompressionParameters(window_log=17, hash_log=12, chain_log=12, search_log=1, min_match=6,
                                             target_length=0, strategy=zstandard.STRATEGY_FAST, write_checksum=1)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class FrameCodec:
    """A zstd compressor and decompressor, kept from frame to frame (setting up a context costs more than
    compressing a small frame). Not thread-safe: one per Spool, as a Spool is used by one thread."""

    __slots__ = ("compress", "_decompress", "joined")

    def __init__(self) -> None:
        self.compress = zstandard.ZstdCompressor(compression_params=PARAMS).compress
        self._decompress = zstandard.ZstdDecompressor().decompress
        self.joined = bytearray()       # the compiled pack's bodies of a frame, reused (see fastpg_frame.c)

    def decompress(self, blob: bytes, size: int | None = None) -> tuple[int, bytes]:
        """(format, data) of a blob of either format; `size`: the length the data must have (checked before
        allocating it, so a damaged size field cannot ask for gigabytes). ValueError when it is damaged."""
        try:
            if blob[:4] != _ZSTD_MAGIC:
                return ZLIB_FORMAT, zlib.decompress(blob) if size is None else \
                    zlib.decompress(blob, zlib.MAX_WBITS, max(1, size))     # the right size at once
            if size is not None and zstandard.frame_content_size(blob) != size:
                raise ValueError(f"the blob holds {zstandard.frame_content_size(blob)} bytes, the head says {size}")
            return FORMAT, self._decompress(blob)
        except (zlib.error, zstandard.ZstdError) as e:
            raise ValueError(str(e)) from None


_local = threading.local()


def thread_codec() -> FrameCodec:
    """This thread's codec, for callers without a Spool's own (tests, tools)."""
    codec: FrameCodec | None = getattr(_local, "codec", None)
    if codec is None:
        codec = _local.codec = FrameCodec()
    return codec


def _fields_pure(events: Sequence[Any]) -> tuple[list[str], int | list[int], list[str], list[int], list[str],
                                                  list[str], list[float], list[int], bytes]:
    """The head's lists after its format number, and the bodies joined with their ids cut out: the reference
    for the compiled pack_events (agent/fastpg_frame.c). A list operation per field rather than one loop over
    the events: fewer Python steps per event."""
    ids = [e.id for e in events]
    bodies = [e.body for e in events]
    idbs = [i.encode() for i in ids]
    offs = [b.find(i) if i else -1 for b, i in zip(bodies, idbs)]
    # the first occurrence, as find saw it; a body without its id stays whole
    cut = [b if o < 0 else b[:o] + b[o + len(i):] for b, i, o in zip(bodies, idbs, offs)]
    each_type = [e.type for e in events]
    types = list(dict.fromkeys(each_type))
    tix: int | list[int] = 0
    if len(types) != 1:
        index = {t: i for i, t in enumerate(types)}
        tix = [index[t] for t in each_type]
    return (types, tix, ids, offs, [e.subject for e in events], [e.position for e in events],
            [e.commit_ts for e in events], list(map(len, cut)), b"".join(cut))


_pack_events: Callable[[Sequence[Any], bytearray], tuple | None] | None
_join_lines: Callable[[list[tuple]], bytes | None] | None
_event_bounds: Callable[[list], tuple | None] | None
_head_index: Callable[[bytes, int], tuple[int, bytes, bytes, int] | None] | None
_head_latencies: Callable[[bytes, float, int, int], list[float]] | None
try:
    from ._fastpg import pack_events as _pack_events
except ImportError:         # not built, or a build from before it: the pure path, the same bytes
    _pack_events = None
try:
    from ._fastpg import join_lines as _join_lines
except ImportError:
    _join_lines = None
try:
    from ._fastpg import event_bounds as _event_bounds
except ImportError:
    _event_bounds = None
try:
    from ._fastpg import head_index as _head_index, head_latencies as _head_latencies
except ImportError:
    _head_index = _head_latencies = None
if os.environ.get("CDC_AGENT_PURE", "") not in ("", "0"):
    _pack_events = _join_lines = _event_bounds = _head_index = _head_latencies = None


def bounds(events: list) -> tuple[str, str, float, float, bool]:
    """(min position, max position, min commit_ts, max commit_ts, whether every event has the first one's
    only_target) of a non-empty list of events: the spool row's bounds and the batch's replay and frame
    tests. In one pass in C for MappedEvents (agent/fastpg_glue.c), else from lists, as the reference."""
    if _event_bounds is not None:
        b = _event_bounds(events)
        if b is not None:
            return b
    positions, ts = [e.position for e in events], [e.commit_ts for e in events]
    targets = [e.only_target for e in events]
    return min(positions), max(positions), min(ts), max(ts), targets.count(targets[0]) == len(targets)


def pack(events: Sequence[Any], codec: FrameCodec | None = None) -> tuple[bytes, bytes]:
    """(head, body) of a frame of `events` (objects with id, type, subject, position, commit_ts, body); the
    spool row's bounds come from `bounds`."""
    codec = codec or thread_codec()
    fields = _pack_events(events, codec.joined) if _pack_events is not None else None
    if fields is not None:
        *lists, joined = fields         # their size in codec.joined, or a view of them in their BodyStore
        body = codec.compress(memoryview(codec.joined)[:joined] if type(joined) is int else joined)
    else:
        *lists, joined = _fields_pure(events)
        body = codec.compress(joined)
    return codec.compress(orjson.dumps([FORMAT, *lists])), body


# the slots a head read for lines only leaves unset until one of them is asked for (FrameHead.__getattr__)
_DECODED = frozenset(("ids", "offs", "subjects", "positions", "ts", "lens", "starts"))


class FrameHead:
    """A frame's head, decoded: per-event metadata, and its bodies once `load_body` was called.

    `lines=True` (the file target's path, Spool.fetch_runs): when compiled, only what the lines and the
    latencies need is read (`_head_index`: the bodies' places, the ids' places in the head's JSON, the commit
    times as doubles), no object per event; the per-event lists (ids, subjects, positions, ts, ...) are
    decoded from the kept JSON the first time something asks for one (`__getattr__`), so every other reader
    sees the same FrameHead."""

    __slots__ = ("seq", "n", "only_target", "format", "types", "tix", "ids", "offs", "subjects", "positions",
                 "ts", "lens", "starts", "payload", "raw", "index", "tsd", "size")

    def __init__(self, seq: int, n: int, only_target: str | None, head: bytes, codec: FrameCodec | None = None,
                 lines: bool = False):
        self.format, self.raw = (codec or thread_codec()).decompress(head)
        self.seq, self.n, self.only_target = seq, n, only_target
        self.payload: bytes | None = None
        self.index: bytes | None = None
        indexed = _head_index(self.raw, n) if lines and _head_index is not None else None
        if indexed is not None:
            end, index, tsd, size = indexed
            first = orjson.loads(self.raw[:end] + b"]")      # the format, the types, the type of each: small
            if first[0] == self.format:
                _, self.types, tix = first
                self.tix = [0] * n if tix == 0 else tix
                self.index, self.tsd, self.size = index, tsd, size
                return
        self._decode()

    def _decode(self) -> None:
        """The head's per-event lists, from its JSON (all of them: the usual path)."""
        d = orjson.loads(self.raw)
        seq, n = self.seq, self.n
        if not isinstance(d, list) or not d or d[0] != self.format or len(d) != 9:
            raise ValueError(f"spool frame {seq}: unknown frame format {d[0] if isinstance(d, list) and d else d!r}")
        self.format, self.types, tix, self.ids, self.offs, self.subjects, self.positions, self.ts, self.lens = d
        if len(self.ids) != n:
            raise ValueError(f"spool frame {seq}: head has {len(self.ids)} events, the row says {n}")
        self.tix = [0] * n if tix == 0 else tix
        self.starts = None
        if self.payload is not None:
            self.starts = [0, *accumulate(self.lens)]
        self.index, self.raw = None, b""       # decoded: the lists from now on, the JSON no longer needed

    def __getattr__(self, name: str) -> Any:
        # only for a slot not set: the per-event lists of a head read for lines only
        if name in _DECODED and self.index is not None:
            self._decode()
            return getattr(self, name)
        raise AttributeError(name)

    def type_of(self, i: int) -> str:
        return self.types[self.tix[i]]

    def load_body(self, body: bytes, codec: FrameCodec | None = None) -> None:
        starts: list[int] | None = None
        if self.index is not None:
            at = self.size
        else:
            starts = [0, *accumulate(self.lens)]
            at = starts[-1]
        fmt, payload = (codec or thread_codec()).decompress(body, at)    # the right size at once: no regrowing
        if fmt != self.format:
            raise ValueError(f"spool frame {self.seq}: a format {fmt} body under a format {self.format} head")
        if at != len(payload):
            raise ValueError(f"spool frame {self.seq}: bodies take {len(payload)} bytes, the head says {at}")
        self.payload = payload
        if starts is not None:
            self.starts = starts

    def latencies(self, now: float, lo: int, hi: int) -> list[float]:
        """now - the commit time of each of the events lo .. hi - 1 (the monitor's commit-to-delivery
        latencies), without a float object per commit time when the head was read for lines."""
        if self.index is not None and _head_latencies is not None:
            return _head_latencies(self.tsd, now, lo, hi)
        return list(map(sub, repeat(now, hi - lo), self.ts[lo:hi]))       # now - t, in C

    def types_of(self, lo: int, hi: int) -> list[str]:
        """The event type of each of the events lo .. hi - 1."""
        if len(self.types) == 1:
            return self.types * (hi - lo)
        return list(map(self.types.__getitem__, self.tix[lo:hi]))

    def events(self, lo: int, hi: int) -> list[SpooledEvent]:
        """The events lo .. hi - 1 of the frame (indexes), bodies restored."""
        payload, starts = self.payload, self.starts
        assert payload is not None and starts is not None      # load_body first
        types, tix, ids, offs = self.types, self.tix, self.ids, self.offs
        subjects, positions, ts, only = self.subjects, self.positions, self.ts, self.only_target
        out = []
        seq0 = self.seq
        for i in range(lo, hi):
            a, b, off, eid = starts[i], starts[i + 1], offs[i], ids[i]
            body = payload[a:b] if off < 0 else payload[a:a + off] + eid.encode() + payload[a + off:b]
            out.append(SpooledEvent(seq0 + i, eid, types[tix[i]], subjects[i], body, ts[i], positions[i], only))
        return out

    def lines(self, lo: int, hi: int, out: list[bytes]) -> None:
        """Append to `out` the pieces of the events lo .. hi - 1's bodies (restored as in `events`), each
        followed by a newline, so that b"".join(out) is their JSON lines: what the file target writes,
        without building an event object per body."""
        payload, starts = self.payload, self.starts
        assert payload is not None and starts is not None      # load_body first
        offs, ids = self.offs, self.ids
        for i in range(lo, hi):
            a, b, off = starts[i], starts[i + 1], offs[i]
            if off < 0:
                out += (payload[a:b], b"\n")
            else:
                cut = a + off
                out += (payload[a:cut], ids[i].encode(), payload[cut:b], b"\n")


def lines_of(runs: Sequence[tuple[FrameHead, int, int]]) -> bytes:
    """The JSON lines of runs (frame, lo, hi) of loaded frames, joined: what `FrameHead.lines` gives, in one
    copy of the bodies when compiled (the pieces and their join were ~20% of the delivery child's CPU)."""
    if _join_lines is not None:
        data = _join_lines([(f.payload, f.raw, f.index, lo, hi) if f.index is not None else
                            (f.payload, f.starts, f.offs, f.ids, lo, hi) for f, lo, hi in runs])
        if data is not None:
            return data
    parts: list[bytes] = []
    for frame, lo, hi in runs:
        frame.lines(lo, hi, parts)
    return b"".join(parts)
