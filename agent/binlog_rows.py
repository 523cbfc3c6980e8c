"""TABLE_MAP events and the generated rows decoders: per distinct TABLE_MAP, one Python function decoding a
whole rows event in a straight-line loop (see agent/binlog.py for why). Pure."""

from __future__ import annotations

import struct
from typing import Any
from collections.abc import Callable, Collection, Mapping

from . import fastmy, myvalues
from .binlog_format import (  # noqa: F401
    BinlogError, CHARSET_CODECS, DEFAULT_COLLATIONS, OM_COLUMN_CHARSET, OM_COLUMN_NAME, OM_DEFAULT_CHARSET,
    OM_ENUM_AND_SET_COLUMN_CHARSET, OM_ENUM_AND_SET_DEFAULT_CHARSET, OM_ENUM_STR_VALUE, OM_PRIMARY_KEY_WITH_PREFIX,
    OM_SET_STR_VALUE, OM_SIGNEDNESS, OM_SIMPLE_PRIMARY_KEY, RowsDecoder, _BLOBS, _CHARACTER, _ENUM_SET, _NUMERIC,
    _float32, codec_for, decode_text, packed_int,
)
from .myvalues import (  # noqa: F401
    TYPE_NAMES, T_BIT, T_BLOB, T_DATE, T_DATETIME, T_DATETIME2, T_DOUBLE, T_ENUM, T_FLOAT, T_GEOMETRY, T_INT24,
    T_JSON, T_LONG, T_LONGLONG, T_LONG_BLOB, T_MEDIUM_BLOB, T_NEWDATE, T_NEWDECIMAL, T_NULL, T_SET, T_SHORT,
    T_STRING, T_TIME, T_TIME2, T_TIMESTAMP, T_TIMESTAMP2, T_TINY, T_TINY_BLOB, T_VARCHAR, T_VAR_STRING, T_YEAR,
    _b64, _bit, _day, _day_cache, _decimal_layout, _enum, _fixed_binary, _lenprefixed, _old_datetime, _old_time,
    _old_timestamp, _padded, _set, _time2, _year, decode_json_binary,
)


# ------------------------------------------------------------------ TABLE_MAP


class Column:
    __slots__ = ("index", "name", "type", "meta", "nullable", "unsigned", "collation", "charset", "values",
                 "json", "logical")

    def __init__(self, index: int, type_: int, meta: Any, nullable: bool):
        self.index, self.type, self.meta, self.nullable = index, type_, meta, nullable
        self.name = f"@{index + 1}"
        self.unsigned = False
        self.collation: int | None = None
        self.charset: str | None = None       # MySQL charset name, once known
        self.values: list[str] | None = None  # ENUM / SET members
        self.json = False                     # MariaDB: a LONGTEXT column declared JSON
        self.logical: str | None = None       # what the catalog says the column is (myvalues.LOGICAL_TYPES)

    def __repr__(self) -> str:
        return f"Column({self.name!r}, {TYPE_NAMES.get(self.type, self.type)}, meta={self.meta!r})"


class TableMap:
    __slots__ = ("table_id", "schema", "table", "name", "columns", "primary_key", "has_names", "shape",
                 "decoders", "key_columns", "render", "layout")

    def __init__(self, table_id: int, schema: str, table: str, columns: list[Column], primary_key: list[int],
                 has_names: bool, shape: bytes):
        self.table_id, self.schema, self.table = table_id, schema, table
        self.name = f"{schema}.{table}"
        self.columns = columns
        self.primary_key = primary_key
        self.key_columns = tuple(columns[i].name for i in primary_key if i < len(columns))
        self.has_names = has_names
        self.shape = shape                    # the TABLE_MAP body without its table id: a schema fingerprint
        # compiled rows decoders by (op, column bitmaps)
        self.decoders: dict[tuple[str, int, int], RowsDecoder] | None = None
        # whether its FULL row images are rendered as JSON text (render_rows), and the column layout the
        # mapper keeps its C plans by (agent/fastrow.py's RowLayout): set by the parser
        self.render = False
        self.layout: Any = None

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def _read_metadata(types: list[int], meta: bytes) -> list[tuple[int, Any]]:
    """Per-column (real type, metadata) from the TABLE_MAP's metadata block."""
    out = []
    p = 0
    for t in types:
        m: Any = None
        if t in (T_FLOAT, T_DOUBLE, T_BLOB, T_TINY_BLOB, T_MEDIUM_BLOB, T_LONG_BLOB, T_GEOMETRY, T_JSON,
                 T_TIMESTAMP2, T_DATETIME2, T_TIME2):
            m = meta[p]
            p += 1
        elif t in (T_VARCHAR, T_VAR_STRING):
            m = meta[p] | meta[p + 1] << 8
            p += 2
        elif t == T_BIT:
            m = (meta[p], meta[p + 1])               # (bits in the last byte, whole bytes)
            p += 2
        elif t == T_NEWDECIMAL:
            m = (meta[p], meta[p + 1])               # (precision, scale)
            p += 2
        elif t in (T_STRING, T_ENUM, T_SET):
            b0, b1 = meta[p], meta[p + 1]
            p += 2
            if b0 in (T_ENUM, T_SET):
                t, m = b0, b1                        # real type, pack length
            else:
                # CHAR: the field length's high bits are folded into the type byte (XOR-ed)
                m = ((((b0 & 0x30) ^ 0x30) << 4) | b1)
                if b0 & 0x30 != 0x30:
                    b0 |= 0x30
                t = b0 if b0 in (T_STRING, T_VAR_STRING) else T_STRING
        out.append((t, m))
    return out


def parse_table_map(body: bytes, table_id_len: int = 6, collations: dict[int, str] | None = None,
                    mariadb: bool = False) -> TableMap:
    """A TABLE_MAP event body (header and checksum removed). `mariadb`: the charset lists of MariaDB's
    optional metadata count GEOMETRY columns as character columns, MySQL's do not."""
    table_id = int.from_bytes(body[:table_id_len], "little")
    p = table_id_len + 2                                # + flags
    shape = body[p:]
    n = body[p]
    schema = body[p + 1:p + 1 + n].decode("utf-8", "replace")
    p += 2 + n
    n = body[p]
    table = body[p + 1:p + 1 + n].decode("utf-8", "replace")
    p += 2 + n
    ncols, p = packed_int(body, p)
    types = list(body[p:p + ncols])
    p += ncols
    mlen, p = packed_int(body, p)
    metas = _read_metadata(types, body[p:p + mlen])
    p += mlen
    nb = (ncols + 7) // 8
    nullmap = int.from_bytes(body[p:p + nb], "little")
    p += nb
    columns = [Column(i, t, m, bool(nullmap >> i & 1)) for i, (t, m) in enumerate(metas)]
    primary_key: list[int] = []
    raw_values: dict[int, list[bytes]] = {}   # ENUM / SET members by column index, decoded with the charset below
    has_names = False
    collations = collations or DEFAULT_COLLATIONS
    numeric = [c for c in columns if c.type in _NUMERIC]
    character = [c for c in columns if c.type in _CHARACTER or (mariadb and c.type == T_GEOMETRY)]
    enumset = [c for c in columns if c.type in _ENUM_SET]
    end = len(body)
    while p < end:
        ft = body[p]
        flen, p = packed_int(body, p + 1)
        field = body[p:p + flen]
        p += flen
        if ft == OM_SIGNEDNESS:
            for i, c in enumerate(numeric):
                c.unsigned = bool(field[i >> 3] & (0x80 >> (i & 7)))
        elif ft in (OM_DEFAULT_CHARSET, OM_ENUM_AND_SET_DEFAULT_CHARSET):
            cols = character if ft == OM_DEFAULT_CHARSET else enumset
            default, q = packed_int(field, 0)
            for c in cols:
                c.collation = default
            while q < len(field):
                idx, q = packed_int(field, q)
                coll, q = packed_int(field, q)
                if idx < len(cols):
                    cols[idx].collation = coll
        elif ft in (OM_COLUMN_CHARSET, OM_ENUM_AND_SET_COLUMN_CHARSET):
            cols = character if ft == OM_COLUMN_CHARSET else enumset
            q = 0
            for c in cols:
                if q >= len(field):
                    break
                c.collation, q = packed_int(field, q)
        elif ft == OM_COLUMN_NAME:
            q = 0
            for c in columns:
                ln, q = packed_int(field, q)
                c.name = field[q:q + ln].decode("utf-8", "replace")
                q += ln
            has_names = True
        elif ft in (OM_SET_STR_VALUE, OM_ENUM_STR_VALUE):
            want = T_SET if ft == OM_SET_STR_VALUE else T_ENUM
            q = 0
            for c in columns:
                if c.type != want:
                    continue
                count, q = packed_int(field, q)
                vals: list[bytes] = []
                for _ in range(count):
                    ln, q = packed_int(field, q)
                    vals.append(field[q:q + ln])
                    q += ln
                raw_values[c.index] = vals
        elif ft == OM_SIMPLE_PRIMARY_KEY:
            q = 0
            while q < len(field):
                i, q = packed_int(field, q)
                primary_key.append(i)
        elif ft == OM_PRIMARY_KEY_WITH_PREFIX:
            q = 0
            while q < len(field):
                i, q = packed_int(field, q)
                _prefix, q = packed_int(field, q)
                primary_key.append(i)
        # OM_GEOMETRY_TYPE, OM_COLUMN_VISIBILITY and newer fields are not needed for values: skipped
    for c in columns:
        if c.collation is not None:
            c.charset = collations.get(c.collation)
            if c.charset is None:
                c.charset = "utf8mb4"                              # unknown collation: assume the common one
        if c.index in raw_values:
            c.values = [decode_text(v, c.charset or "utf8mb4") for v in raw_values[c.index]]
    return TableMap(table_id, schema, table, columns, primary_key, has_names, bytes(shape))


def apply_logical_types(tm: TableMap, hints: Collection[str] | Mapping[str, str] | None) -> None:
    """Marks the columns the catalog knows more about: `hints` is a set of JSON column names or a mapping
    column -> logical type. A hint that does not fit the column's binlog type is ignored (the column was
    altered since the catalog was read: its bytes decide)."""
    if not hints:
        return
    mapping = hints if isinstance(hints, dict) else dict.fromkeys(hints, myvalues.JSON)
    for c in tm.columns:
        lt = mapping.get(c.name)
        if lt == myvalues.JSON and c.type in _BLOBS:
            c.json, c.logical = True, lt
        elif lt in (myvalues.UUID, myvalues.INET6) and c.type == T_STRING and c.meta == 16:
            c.logical = lt
        elif lt == myvalues.INET4 and c.type == T_STRING and c.meta == 4:
            c.logical = lt


# ------------------------------------------------------------------ rows decoder generation

_I16 = struct.Struct("<h").unpack_from
_I32 = struct.Struct("<i").unpack_from
_U32 = struct.Struct("<I").unpack_from
_I64 = struct.Struct("<q").unpack_from
_U64 = struct.Struct("<Q").unpack_from
_F32 = struct.Struct("<f").unpack_from
_F64 = struct.Struct("<d").unpack_from


def _frac_code(fsp: int, off: int) -> tuple[str, int]:
    """Inline expression for TIMESTAMP2/DATETIME2 fractional seconds at b[p+off]: (expr, bytes)."""
    if not fsp:
        return "0", 0
    if fsp <= 2:
        return f"b[p+{off}] * 10000", 1
    if fsp <= 4:
        return f"(b[p+{off}] << 8 | b[p+{off + 1}]) * 100", 2
    return f"(b[p+{off}] << 16 | b[p+{off + 1}] << 8 | b[p+{off + 2}])", 3


def _decimal_code(precision: int, scale: int) -> list[str]:
    """Inline code for DECIMAL(precision, scale): the same format as _decimal_decoder, unrolled."""
    int_pieces, frac_pieces, size = _decimal_layout(precision, scale)
    bits = size * 8
    sign = 1 << (bits - 1)
    shift = bits
    ip_terms, fr_terms = [], []
    digits_left = sum(d for _, d in int_pieces)
    for n, d in int_pieces:
        shift -= n * 8
        digits_left -= d
        term = f"(x >> {shift} & {(1 << n * 8) - 1})" if shift else f"(x & {(1 << n * 8) - 1})"
        ip_terms.append(f"{term} * {10 ** digits_left}" if digits_left else term)
    for n, d in frac_pieces:
        shift -= n * 8
        term = f"x >> {shift} & {(1 << n * 8) - 1}" if shift else f"x & {(1 << n * 8) - 1}"
        fr_terms.append(f"{{{term}:0{d}d}}")
    ip = " + ".join(ip_terms) if ip_terms else "0"
    lines = [f"x = int.from_bytes(b[p:p+{size}], 'big'); p += {size}",
             f"if x & {sign}: x ^= {sign}; sg = ''",
             f"else: x ^= {((1 << bits) - 1) ^ sign}; sg = '-' if x else ''"]
    if fr_terms:
        lines.append(f"$v = f'{{sg}}{{{ip}}}.{''.join(fr_terms)}'")
    else:
        lines.append(f"$v = f'{{sg}}{{{ip}}}'")
    return lines


_f32_cache: dict[bytes, float] = {}


def _float32_cached(raw: bytes) -> float:
    v = _f32_cache.get(raw)
    if v is None:
        if len(_f32_cache) > 65536:
            _f32_cache.clear()
        v = _f32_cache[raw] = _float32(_F32(raw, 0)[0])
    return v


def _column_decoder(c: Column) -> tuple[list[str] | None, Callable[..., Any] | None]:
    """How to decode one column: inline code lines (using `b`, `p`, assigning `v`) or a function
    (b, p) -> (v, p). Returns (lines, None) or (None, fn)."""
    t, m = c.type, c.meta
    u = c.unsigned
    if t == T_TINY:
        return (["$v = b[p]; p += 1"] if u else ["$v = b[p]; p += 1", "if $v > 127: $v -= 256"]), None
    if t == T_SHORT:
        return (["$v = b[p] | b[p+1] << 8; p += 2"] + ([] if u else ["if $v > 32767: $v -= 65536"])), None
    if t == T_INT24:
        return (["$v = b[p] | b[p+1] << 8 | b[p+2] << 16; p += 3"]
                + ([] if u else ["if $v > 8388607: $v -= 16777216"])), None
    if t == T_LONG:
        return [f"$v = {'U32' if u else 'I32'}(b, p)[0]; p += 4"], None
    if t == T_LONGLONG:
        return [f"$v = {'U64' if u else 'I64'}(b, p)[0]; p += 8"], None
    if t == T_FLOAT:
        # ERP floats repeat (discounts, rates): the shortest-repr conversion is cached by the raw bytes
        return ["k = b[p:p+4]; p += 4", "$v = F32C.get(k)", "if $v is None: $v = F32R(k)"], None
    if t == T_DOUBLE:
        return ["$v = F64(b, p)[0]; p += 8"], None
    if t == T_DATE or t == T_NEWDATE:
        return (["x = b[p] | b[p+1] << 8 | b[p+2] << 16; p += 3",
                 "$v = f'{x >> 9:04d}-{x >> 5 & 15:02d}-{x & 31:02d}'"]), None
    if t == T_YEAR:
        return None, _year
    if t == T_NEWDECIMAL:
        return _decimal_code(*m), None
    if t == T_TIMESTAMP2:
        fr, fb = _frac_code(m, 4)
        # format_timestamp, inlined: days from a cache, the time of day by arithmetic
        return ([f"x = b[p] << 24 | b[p+1] << 16 | b[p+2] << 8 | b[p+3]; us = {fr}; p += {4 + fb}",
                 "if x or us:",
                 "    dd, r = divmod(x, 86400)",
                 "    $v = f'{DC.get(dd) or DAY(dd)}T{r // 3600:02d}:{r // 60 % 60:02d}:{r % 60:02d}.{us:06d}Z'",
                 "else: $v = '0000-00-00T00:00:00.000000Z'"]), None
    if t == T_DATETIME2:
        fr, fb = _frac_code(m, 5)
        frac = ".{us:06d}" if m else ""
        return ([f"x = int.from_bytes(b[p:p+5], 'big') - 549755813888; us = {fr}; p += {5 + fb}",
                 "ymd = x >> 17; ym = ymd >> 5; hms = x & 131071",
                 "$v = f'{ym // 13:04d}-{ym % 13:02d}-{ymd & 31:02d}T{hms >> 12:02d}:{hms >> 6 & 63:02d}:"
                 "{hms & 63:02d}" + frac + "'"]), None
    if t == T_TIME2:
        return None, _time2(m)
    if t == T_TIMESTAMP:
        return None, _old_timestamp
    if t == T_DATETIME:
        return None, _old_datetime
    if t == T_TIME:
        return None, _old_time
    if t == T_BIT:
        bits, whole = m
        return None, _bit(whole + (1 if bits else 0))
    if t == T_ENUM:
        return None, _enum(c.values or [], m)
    if t == T_SET:
        return None, _set(c.values or [], m)
    if t == T_JSON:
        return None, _lenprefixed(m, decode_json_binary)
    if t == T_GEOMETRY:
        return None, _lenprefixed(m, _b64)
    if t in (T_VARCHAR, T_VAR_STRING, T_STRING) or t in _BLOBS:
        if t in _BLOBS:
            lenbytes = m
        elif t == T_STRING:
            lenbytes = 1 if m < 256 else 2
        else:
            lenbytes = 1 if m < 256 else 2
        codec = CHARSET_CODECS.get(c.charset or "utf8mb4", "utf-8") if c.charset != "binary" else None
        if c.charset is None and t in _BLOBS and not c.json:
            codec = None                      # no charset metadata: a BLOB (TEXT would have one)
        if c.json and codec is not None:
            ln = {1: "n = b[p]; p += 1", 2: "n = b[p] | b[p+1] << 8; p += 2"}.get(
                lenbytes, f"n = int.from_bytes(b[p:p+{lenbytes}], 'little'); p += {lenbytes}")
            jcodec, jerrors = codec_for(c.charset)
            return [ln, f"$v = JT(b[p:p+n].decode({jcodec or 'utf-8'!r}, {jerrors!r})); p += n"], None
        if codec is None:
            conv = myvalues.binary_converter(c.logical) if t == T_STRING else None
            if conv is not None:                          # MariaDB UUID / INET4 / INET6
                return None, _lenprefixed(lenbytes, _padded(m, conv))
            if t == T_STRING:
                return None, _lenprefixed(lenbytes, _fixed_binary(m))
            return None, _lenprefixed(lenbytes, _b64)
        ln = "n = b[p]; p += 1" if lenbytes == 1 else (
            "n = b[p] | b[p+1] << 8; p += 2" if lenbytes == 2 else
            f"n = int.from_bytes(b[p:p+{lenbytes}], 'little'); p += {lenbytes}")
        if codec == "utf-8":
            return [ln, "$v = b[p:p+n].decode('utf-8', 'replace'); p += n"], None
        codec, errors = codec_for(c.charset)
        return [ln, f"$v = b[p:p+n].decode({codec!r}, {errors!r}); p += n"], None
    if t == T_NULL:
        return ["$v = None"], None
    raise BinlogError(f"column {c.name!r}: unsupported column type {t} ({TYPE_NAMES.get(t, '?')})")


_GLOBALS: dict[str, Any] = {"I32": _I32, "U32": _U32, "I64": _I64, "U64": _U64, "F32": _F32, "F64": _F64,
                            "F32R": _float32_cached, "F32C": _f32_cache, "DC": _day_cache, "DAY": _day,
                            "JT": myvalues.json_text}


def _image_code(tm: TableMap, present: int, fns: dict[str, Callable[..., Any]], target: str) -> list[str]:
    """Lines decoding one row image at b[p] into the dict `target`: the columns in the `present` bitmap (all of
    them with binlog_row_image=FULL), whose null bitmap counts present columns only."""
    cols = [c for c in tm.columns if present >> c.index & 1]
    n = len(cols)
    nb = (n + 7) // 8
    lines = [f"nb = int.from_bytes(b[p:p+{nb}], 'little'); p += {nb}" if nb > 1 else "nb = b[p]; p += 1"]
    checked, plain = [], []
    for i, c in enumerate(cols):
        code, fn = _column_decoder(c)
        if fn is not None:
            fname = f"_c{c.index}"
            fns[fname] = fn
            code = ["$v, p = " + fname + "(b, p)"]
        assert code is not None               # _column_decoder returns either code lines or a function
        body = [ln.replace("$v", f"v{i}") for ln in code]
        # the null bit is tested for NOT NULL columns too: cheap, and safe whatever the TABLE_MAP says
        checked.append(f"if nb >> {i} & 1: v{i} = None")
        checked.append("else:")
        checked.extend("    " + ln for ln in body)
        plain.extend(body)
    # rows without NULLs (the common case) skip the per-column null tests
    lines.append("if nb:")
    lines.extend("    " + ln for ln in checked)
    lines.append("else:")
    lines.extend("    " + ln for ln in plain)
    items = ", ".join(f"{c.name!r}: v{i}" for i, c in enumerate(cols))
    lines.append(f"{target} = {{{items}}}")
    return lines


def _column_function(c: Column) -> Callable[[bytes, int], tuple[Any, int]]:
    """One column's pure decoder as a function (b, p) -> (v, p): the C core's fallback (agent/fastmy.py)."""
    code, fn = _column_decoder(c)
    if fn is not None:
        return fn
    assert code is not None
    src = "\n".join(["def dec(b, p):", *("    " + ln.replace("$v", "v") for ln in code), "    return v, p"])
    ns = dict(_GLOBALS)
    exec(compile(src, f"<binlog column {c.name}>", "exec"), ns)
    dec: Callable[[bytes, int], tuple[Any, int]] = ns["dec"]
    return dec


def _image_plan(tm: TableMap, present: int) -> object:
    cols = [c for c in tm.columns if present >> c.index & 1]
    return fastmy.image_plan(cols, [c.name for c in cols], [_column_function(c) for c in cols])


def compile_rows_decoder(tm: TableMap, kind: str, present: int | None = None,
                         present2: int | None = None, force_pure: bool | None = None) -> RowsDecoder:
    """A function (b, p, end) -> (rows, end offset reached), specialised for this TABLE_MAP and these column
    bitmaps (default: every column, binlog_row_image=FULL). insert/delete: a list of dicts; update: a list of
    (before, after) dict pairs. The compiled core's (agent/fastmy.py) when it is built and not switched off
    (CDC_AGENT_PURE=1, or force_pure), else generated Python code; both give the same values."""
    full = (1 << len(tm.columns)) - 1
    images = (present, present2) if kind == "update" else (present,)
    if any(not (full if img is None else img) & full for img in images):
        # its null bitmap has no bytes and no value follows: rows of no bytes cannot be told apart (the pure
        # code would not compile, a decode would never end). No server writes one; bad input gets this message.
        raise BinlogError(f"rows event for {tm.name} has a row image with no columns (column bitmap empty)")
    if fastmy.enabled(force_pure):
        plan2 = _image_plan(tm, full if present2 is None else present2) if kind == "update" else None
        return fastmy.rows_decoder(_image_plan(tm, full if present is None else present), plan2)
    fns: dict[str, Callable[..., Any]] = {}
    img1 = _image_code(tm, full if present is None else present, fns, "r1")
    lines = ["def decode(b, p, end):", "    out = []", "    append = out.append", "    while p < end:"]
    lines += ["        " + ln for ln in img1]
    if kind == "update":
        img2 = _image_code(tm, full if present2 is None else present2, fns, "r2")
        lines += ["        " + ln for ln in img2]
        lines.append("        append((r1, r2))")
    else:
        lines.append("        append(r1)")
    lines.append("    return out, p")
    src = "\n".join(lines)
    ns = dict(_GLOBALS)
    ns.update(fns)
    exec(compile(src, f"<binlog rows {tm.name}>", "exec"), ns)
    decode: RowsDecoder = ns["decode"]
    return decode


def compile_rows_renderer(tm: TableMap, op: str) -> Callable[[bytes, int, int], Any] | None:
    """render(b, p, end) -> (rendered rows, row starts, end offset reached) for FULL row images of this
    TABLE_MAP: each row's values as JSON text (agent/fastmy_render.c), for the mapper's C renderer; None
    when that path is off (an extension not built, CDC_AGENT_PURE=1)."""
    if not fastmy.render_enabled():
        return None
    full = (1 << len(tm.columns)) - 1
    plan = _image_plan(tm, full)
    return fastmy.rows_renderer(op, plan, _image_plan(tm, full) if op == "update" else None)
