"""A RowChange whose values the compiled core already rendered as JSON text (agent/fastpath.py).

The PostgreSQL source hands the mapper one of these for each row message agent/_fastpg.c's render_row
could render: `rendered` holds every value's JSON text, and the mapper renders the CloudEvent from it in C
without a Python object per column. `before` and `after` are still there for whatever reads them (a
snapshot window, a dead letter, a values map, the outbox): they are decoded from the message on the pure
path the first time they are read, so they are the same dicts the pure path would have made. A rendered
row never has unavailable columns (an unchanged TOAST value is not rendered).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import fastpath
from .changes import RowChange

_BEFORE = RowChange.__dict__["before"]      # the dataclass's own slots, under the properties below
_AFTER = RowChange.__dict__["after"]

Images = tuple["dict[str, Any] | None", "dict[str, Any] | None"]


class RowLayout:
    """A relation's columns as the source rendered them: the mapper keeps its C plans per layout (by
    identity: a new Relation message makes a new one)."""

    __slots__ = ("names", "key_index")

    def __init__(self, names: tuple[str, ...], key_index: tuple[int, ...]):
        self.names = names              # column names in column order
        self.key_index = key_index      # the replica identity columns (what a 'K' delete's old image holds)


class _RenderedSlots(RowChange):
    """RenderedRowChange's own slots, below its `rendered` property: the compiled cores fill them by their
    member descriptors (agent/fastpath.py, agent/fastmy.py look them up past the property)."""

    __slots__ = ("rendered", "layout", "_load", "_message", "_loaded", "_at")


_RENDERED = _RenderedSlots.__dict__["rendered"]
_ROW_CHUNK = getattr(fastpath._fastpg, "RowChunk", None)


class RenderedRowChange(_RenderedSlots):
    """The rendered row and the message are bytes (the message: whatever `load` takes), or, for the changes
    take_rows made with a RowArena, both in one RowChunk (agent/fastpg_rows.c) at index `_at`: the
    `rendered` property and the row images read them from there, so every reader sees the same bytes and
    dicts."""

    __slots__ = ()

    def __init__(self, table: str, op: str, position: str, commit_time: str, commit_ts: float, txid: str | None,
                 key_columns: tuple[str, ...], rendered: bytes, layout: RowLayout, load: Callable[[Any], Images],
                 message: Any):
        # the fields one by one, not through the dataclass's __init__: this runs for every change, and
        # before/after stay unset until read (the properties load them first)
        self.table, self.op, self.position, self.commit_time = table, op, position, commit_time
        self.commit_ts, self.txid, self.key_columns = commit_ts, txid, key_columns
        self.unavailable, self.id_key, self.target = (), None, None
        _RENDERED.__set__(self, rendered)   # render_row's output
        self.layout = layout        # the columns it was rendered with
        self._load, self._message, self._loaded = load, message, False
        self._at: int | None = None

    @property
    def rendered(self) -> bytes:
        r = _RENDERED.__get__(self)
        return r if type(r) is not _ROW_CHUNK else r.rendered(self._at)

    def _images(self) -> None:
        m = self._message
        before, after = self._load(m if type(m) is not _ROW_CHUNK else m.frame(self._at))
        _BEFORE.__set__(self, before)
        _AFTER.__set__(self, after)
        self._loaded = True

    @property
    def before(self) -> dict[str, Any] | None:
        if not self._loaded:
            self._images()
        return _BEFORE.__get__(self)

    @before.setter
    def before(self, value: dict[str, Any] | None) -> None:
        if not self._loaded:
            self._images()
        _BEFORE.__set__(self, value)

    @property
    def after(self) -> dict[str, Any] | None:
        if not self._loaded:
            self._images()
        return _AFTER.__get__(self)

    @after.setter
    def after(self, value: dict[str, Any] | None) -> None:
        if not self._loaded:
            self._images()
        _AFTER.__set__(self, value)
