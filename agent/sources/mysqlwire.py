"""A small MySQL / MariaDB client for the replication connection: handshake, authentication
(mysql_native_password, caching_sha2_password with its fast path and RSA full path, sha256 via TLS),
optional TLS, simple statements, COM_REGISTER_SLAVE and COM_BINLOG_DUMP, then binlog events read from a
buffered socket with timeouts that never lose a partly received packet.

Why our own: the PyMySQL drivers do not offer the replication commands through their public API, and
libraries that add them reach into private methods and reconnect on their own, resuming from their idea
of the position. Here a lost connection is an error the caller sees (it resumes from its own checkpoint).
"""

from __future__ import annotations

import hashlib
import socket
import ssl as ssl_mod
import struct
import time
from typing import NoReturn

# capability flags
CLIENT_LONG_PASSWORD = 1
CLIENT_LONG_FLAG = 4
CLIENT_CONNECT_WITH_DB = 8
CLIENT_PROTOCOL_41 = 0x200
CLIENT_SSL = 0x800
CLIENT_TRANSACTIONS = 0x2000
CLIENT_SECURE_CONNECTION = 0x8000
CLIENT_MULTI_RESULTS = 0x20000
CLIENT_PLUGIN_AUTH = 0x80000
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 0x200000

COM_QUERY = 0x03
COM_BINLOG_DUMP = 0x12
COM_REGISTER_SLAVE = 0x15

MAX_PACKET = 0xFFFFFF
READ_SIZE = 1 << 20               # bytes asked of the socket per read (at least)
BUFFER_SIZE = 4 << 20             # the receive buffer's usual size (larger while a larger packet arrives)
UTF8MB4_GENERAL_CI = 45


def tls_context(mode: str, ca: str | None, cert: str | None, key: str | None) -> ssl_mod.SSLContext:
    """The TLS context for an ssl_mode as MySQL clients name them: `verify_ca` / `verify_identity` check the
    server's certificate (and its name), `required` / `preferred` encrypt without checking."""
    if mode in ("verify_ca", "verify_identity"):
        ctx = ssl_mod.create_default_context(cafile=ca)
        ctx.check_hostname = mode == "verify_identity"
    else:
        ctx = ssl_mod.SSLContext(ssl_mod.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl_mod.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


class WireError(Exception):
    """Connection-level problem (refused, closed, timeout, protocol): the caller may retry."""


class ServerError(Exception):
    """The server answered with an error packet."""

    def __init__(self, code: int, state: str, message: str):
        super().__init__(f"({code}) {message}")
        self.code, self.state, self.message = code, state, message


class AuthError(ServerError):
    pass


def _lenenc_int(n: int) -> bytes:
    if n < 251:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfc" + n.to_bytes(2, "little")
    if n < 1 << 24:
        return b"\xfd" + n.to_bytes(3, "little")
    return b"\xfe" + n.to_bytes(8, "little")


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def scramble_native(password: bytes, salt: bytes) -> bytes:
    if not password:
        return b""
    h1 = hashlib.sha1(password).digest()
    h2 = hashlib.sha1(h1).digest()
    return _xor(h1, hashlib.sha1(salt + h2).digest())


def scramble_sha256(password: bytes, salt: bytes) -> bytes:
    """caching_sha2_password fast path: XOR(SHA256(pw), SHA256(SHA256(SHA256(pw)) + salt))."""
    if not password:
        return b""
    p1 = hashlib.sha256(password).digest()
    p2 = hashlib.sha256(p1).digest()
    return _xor(p1, hashlib.sha256(p2 + salt).digest())


def _rsa_encrypt(password: bytes, salt: bytes, pem: bytes) -> bytes:
    try:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa
    except ImportError:      # a dependency of the agent; only an install that skipped it gets here
        raise AuthError(2061, "HY000", "the server needs RSA password exchange (caching_sha2_password without TLS) "
                                       "and the 'cryptography' package is not installed; use TLS or install "
                                       "it") from None
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise AuthError(2061, "HY000", f"the server's public key for the password exchange is not an RSA key "
                                       f"({type(key).__name__})")
    plain = password + b"\x00"
    xored = bytes(c ^ salt[i % len(salt)] for i, c in enumerate(plain))
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    return key.encrypt(xored, oaep)


class Connection:
    """One connection. `ssl_mode`: disabled | preferred | required | verify_ca | verify_identity."""

    def __init__(self, host: str, port: int, user: str, password: str, *, database: str | None = None,
                 connect_timeout: float = 10.0, ssl_mode: str = "preferred", ssl_ca: str | None = None,
                 ssl_cert: str | None = None, ssl_key: str | None = None):
        self.host, self.port, self.user = host, port, user
        self._password = password.encode("utf-8")
        self.database = database
        self.connect_timeout = connect_timeout
        self.ssl_mode, self.ssl_ca, self.ssl_cert, self.ssl_key = ssl_mode, ssl_ca, ssl_cert, ssl_key
        self.sock: socket.socket | None = None
        self.server_version = ""
        self.connection_id = 0
        self.tls = False
        # received bytes: the unread ones are _rbuf[_pos:_end]. The socket reads straight into this buffer
        # (recv_into) and each packet is copied out once, where joining every read into a new bytes object
        # and slicing each packet, then each event, out of it copied every byte three times
        self._rbuf = bytearray()
        self._view = memoryview(self._rbuf)
        self._pos = 0
        self._end = 0
        self._seq = 0
        self._timeout: float | None = -1.0

    # ---------------------------------------------------------------- socket

    def connect(self) -> Connection:
        try:
            if self.host.startswith("/"):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(self.connect_timeout)
                s.connect(self.host)
            else:
                s = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        except OSError as e:
            raise WireError(f"cannot connect to {self.host}:{self.port}: {e.strerror or e}") from None
        self.sock = s
        self._timeout = self.connect_timeout
        try:
            self._handshake()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        s, self.sock = self.sock, None
        if s is not None:
            try:
                s.close()
            except OSError:
                pass

    def _open_sock(self) -> socket.socket:
        if self.sock is None:
            raise WireError("connection is closed")
        return self.sock

    def _set_timeout(self, t: float | None) -> None:
        if t != self._timeout:
            self._open_sock().settimeout(t)
            self._timeout = t

    def _recv(self, timeout: float | None, want: int = 0) -> bool:
        """Append what arrives to the buffer (at least `want` bytes when they come in time). False on timeout
        with nothing received; the buffer always keeps partial packets."""
        if self.sock is None:
            raise WireError("connection is closed")
        self._set_timeout(timeout)
        got = 0
        while True:
            self._room(max(want - got, READ_SIZE))
            try:
                n = self.sock.recv_into(self._view[self._end:])
            except (TimeoutError, BlockingIOError, ssl_mod.SSLWantReadError):
                break
            except OSError as e:
                raise WireError(f"connection to {self.host}:{self.port} lost: {e.strerror or e}") from None
            if not n:
                raise WireError(f"connection to {self.host}:{self.port} closed by the server")
            self._end += n
            got += n
            if got >= want:
                break
        return got > 0

    def _room(self, need: int) -> None:
        """At least `need` free bytes after the received ones: the unread bytes move to the front, into a new
        buffer when this one is too small (or much larger than needed: after a large event)."""
        free = len(self._rbuf) - self._end
        if free >= need:
            return
        keep = self._end - self._pos
        size = max(BUFFER_SIZE, keep + need)
        if size <= len(self._rbuf) <= 2 * size:
            if keep:
                self._rbuf[:keep] = bytes(self._view[self._pos:self._end])   # (a copy: the ranges may overlap)
        else:
            rest = bytes(self._view[self._pos:self._end])
            self._view.release()
            self._rbuf = bytearray(size)
            self._rbuf[:keep] = rest
            self._view = memoryview(self._rbuf)
        self._pos, self._end = 0, keep

    def buffered(self) -> bool:
        """A whole packet is already in the buffer (reading it will not block)."""
        buf, pos = self._rbuf, self._pos
        if self._end - pos < 4:
            return False
        n = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
        return self._end - pos >= 4 + n

    def read_packet(self, timeout: float | None = None) -> bytes | None:
        """One logical packet (large ones joined). None when `timeout` seconds passed first (0: do not
        wait). timeout None: the connection's default (connect_timeout)."""
        if timeout is None:
            timeout = self.connect_timeout
        deadline = None
        wait = timeout
        parts: list[bytes] = []
        while True:
            buf, pos = self._rbuf, self._pos
            avail = self._end - pos
            need = 4
            if avail >= 4:
                n = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
                need = 4 + n
                if avail >= need:
                    self._seq = (buf[pos + 3] + 1) & 0xFF
                    payload = bytes(self._view[pos + 4:pos + 4 + n])
                    self._pos = pos + 4 + n
                    if n == MAX_PACKET:
                        parts.append(payload)
                        continue
                    if parts:
                        parts.append(payload)
                        return b"".join(parts)
                    return payload
            if deadline is None:
                deadline = time.monotonic() + timeout
                wait = timeout
            else:
                wait = max(0.0, deadline - time.monotonic())
            if not self._recv(wait, need - avail):
                if parts:
                    # a large event is half read: it is waited for in full rather than kept in pieces
                    if not self._recv(self.connect_timeout, need - avail):
                        self._timeout_error()
                    continue
                return None

    def _timeout_error(self) -> NoReturn:
        raise WireError(f"no data from {self.host}:{self.port} for {self.connect_timeout:.0f}s")

    def _write(self, payload: bytes) -> None:
        out = []
        while True:
            chunk, payload = payload[:MAX_PACKET], payload[MAX_PACKET:]
            out.append(len(chunk).to_bytes(3, "little") + bytes([self._seq]) + chunk)
            self._seq = (self._seq + 1) & 0xFF
            if len(chunk) < MAX_PACKET:
                break
        try:
            self._set_timeout(self.connect_timeout)
            self._open_sock().sendall(b"".join(out))
        except OSError as e:
            raise WireError(f"connection to {self.host}:{self.port} lost: {e.strerror or e}") from None

    def _command(self, cmd: int, payload: bytes = b"") -> None:
        self._seq = 0
        self._write(bytes([cmd]) + payload)

    def _must_read(self) -> bytes:
        pkt = self.read_packet(self.connect_timeout)
        if pkt is None:
            self._timeout_error()
        return pkt

    @staticmethod
    def error_from(pkt: bytes, cls=ServerError) -> ServerError:
        code = int.from_bytes(pkt[1:3], "little")
        if pkt[3:4] == b"#":
            state, msg = pkt[4:9].decode("ascii", "replace"), pkt[9:]
        else:
            state, msg = "HY000", pkt[3:]
        return cls(code, state, msg.decode("utf-8", "replace"))

    # ---------------------------------------------------------------- handshake

    def _handshake(self) -> None:
        pkt = self._must_read()
        if pkt[0] == 0xFF:
            raise self.error_from(pkt)
        if pkt[0] != 10:
            raise WireError(f"unsupported protocol version {pkt[0]} from {self.host}:{self.port}")
        p = 1
        end = pkt.index(b"\x00", p)
        self.server_version = pkt[p:end].decode("ascii", "replace")
        p = end + 1
        self.connection_id = int.from_bytes(pkt[p:p + 4], "little")
        salt = pkt[p + 4:p + 12]
        p += 13
        caps = int.from_bytes(pkt[p:p + 2], "little")
        p += 2
        plugin = "mysql_native_password"
        if len(pkt) > p:
            p += 3                                     # charset, status flags
            caps |= int.from_bytes(pkt[p:p + 2], "little") << 16
            p += 2
            salt_len = pkt[p]
            p += 11                                    # length byte + 10 reserved
            if caps & CLIENT_SECURE_CONNECTION:
                n = max(13, salt_len - 8)
                salt += pkt[p:p + n].rstrip(b"\x00")[:12] if n else b""
                p += n
            if caps & CLIENT_PLUGIN_AUTH and p < len(pkt):
                end = pkt.find(b"\x00", p)
                plugin = pkt[p:end if end >= 0 else len(pkt)].decode("ascii", "replace")
        salt = salt[:20]
        flags = (CLIENT_LONG_PASSWORD | CLIENT_LONG_FLAG | CLIENT_PROTOCOL_41 | CLIENT_TRANSACTIONS
                 | CLIENT_SECURE_CONNECTION | CLIENT_MULTI_RESULTS | CLIENT_PLUGIN_AUTH
                 | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA)
        flags &= caps | CLIENT_PROTOCOL_41
        if self.database:
            flags |= CLIENT_CONNECT_WITH_DB
        head = struct.pack("<IIB23x", flags, MAX_PACKET, UTF8MB4_GENERAL_CI)
        want_tls = self.ssl_mode != "disabled"
        if want_tls and caps & CLIENT_SSL:
            self._write(struct.pack("<IIB23x", flags | CLIENT_SSL, MAX_PACKET, UTF8MB4_GENERAL_CI))
            self._start_tls()
            flags |= CLIENT_SSL
            head = struct.pack("<IIB23x", flags, MAX_PACKET, UTF8MB4_GENERAL_CI)
        elif self.ssl_mode in ("required", "verify_ca", "verify_identity"):
            raise WireError(f"{self.host}:{self.port} does not offer TLS and ssl_mode={self.ssl_mode}")
        auth = self._auth_data(plugin, salt)
        body = head + self.user.encode("utf-8") + b"\x00"
        if flags & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
            body += _lenenc_int(len(auth)) + auth
        else:
            body += bytes([len(auth)]) + auth
        if self.database:
            body += self.database.encode("utf-8") + b"\x00"
        body += plugin.encode("ascii") + b"\x00"
        self._write(body)
        self._auth_loop(plugin, salt)

    def _start_tls(self) -> None:
        ctx = tls_context(self.ssl_mode, self.ssl_ca, self.ssl_cert, self.ssl_key)
        try:
            self._set_timeout(self.connect_timeout)
            self.sock = ctx.wrap_socket(self._open_sock(), server_hostname=self.host if ctx.check_hostname else None)
        except (OSError, ssl_mod.SSLError) as e:
            raise WireError(f"TLS with {self.host}:{self.port} failed: {e}") from None
        self._timeout = -1.0
        self.tls = True

    def _auth_data(self, plugin: str, salt: bytes) -> bytes:
        if plugin == "mysql_native_password":
            return scramble_native(self._password, salt)
        if plugin == "caching_sha2_password":
            return scramble_sha256(self._password, salt)
        secure = self.tls or self.host.startswith("/")
        if plugin == "sha256_password":
            return self._password + b"\x00" if secure else b"\x01"      # b"\x01": send me your public key
        if plugin == "mysql_clear_password" and secure:
            return self._password + b"\x00"
        raise AuthError(1251, "08004", f"authentication plugin {plugin!r} is not supported by the agent's "
                                       f"replication client (use mysql_native_password or caching_sha2_password)")

    def _auth_loop(self, plugin: str, salt: bytes) -> None:
        while True:
            pkt = self._must_read()
            first = pkt[0]
            if first == 0x00:
                return
            if first == 0xFF:
                raise self.error_from(pkt, AuthError)
            if first == 0xFE:                               # auth switch request
                end = pkt.find(b"\x00", 1)
                plugin = pkt[1:end].decode("ascii", "replace")
                salt = pkt[end + 1:].rstrip(b"\x00")[:20] or salt
                self._write(self._auth_data(plugin, salt))
                continue
            if first == 0x01:                               # more data for the current plugin
                data = pkt[1:]
                if plugin == "caching_sha2_password" and data[:1] == b"\x03":
                    continue                                # fast path ok; the OK packet follows
                if plugin == "caching_sha2_password" and data[:1] == b"\x04":
                    if self.tls or self.host.startswith("/"):
                        self._write(self._password + b"\x00")
                    else:
                        self._write(b"\x02")                # ask for the server's public key
                        key = self._must_read()
                        if key[:1] == b"\xff":
                            raise self.error_from(key, AuthError)
                        self._write(_rsa_encrypt(self._password, salt, key[1:]))
                    continue
                if plugin == "sha256_password" and data.startswith(b"-----BEGIN"):
                    self._write(_rsa_encrypt(self._password, salt, data))
                    continue
            raise WireError(f"unexpected packet 0x{first:02x} during authentication")

    # ---------------------------------------------------------------- commands

    def execute(self, sql: str) -> None:
        """A statement without a result set (SET ...). Raises ServerError on an error answer."""
        self._command(COM_QUERY, sql.encode("utf-8"))
        pkt = self._must_read()
        if pkt[0] == 0xFF:
            raise self.error_from(pkt)
        if pkt[0] != 0x00:
            # a result set: skip it (column definitions, EOF, rows, EOF)
            eofs = 0
            while eofs < 2:
                pkt = self._must_read()
                if pkt[0] == 0xFF:
                    raise self.error_from(pkt)
                if pkt[0] == 0xFE and len(pkt) < 9:
                    eofs += 1

    def query(self, sql: str, timeout: float = 60.0) -> list[bytes]:
        """A statement's result set as its row packets, each a run of length-encoded text values (NULL is
        0xFB; agent/myvalues.text_values splits one); [] for a statement without one. `timeout`: longest
        wait for each packet. Raises ServerError on an error answer."""
        self._command(COM_QUERY, sql.encode("utf-8"))
        pkt = self._query_packet(timeout)
        if pkt[0] == 0xFF:
            raise self.error_from(pkt)
        if pkt[0] == 0x00:
            return []
        while True:                                     # column definitions, then EOF
            pkt = self._query_packet(timeout)
            if pkt[0] == 0xFF:
                raise self.error_from(pkt)
            if pkt[0] == 0xFE and len(pkt) < 9:
                break
        rows: list[bytes] = []
        while True:
            pkt = self._query_packet(timeout)
            first = pkt[0] if pkt else 0
            # no value starts with 0xFF, and one that starts with 0xFE is at least 9 bytes long
            if first == 0xFE and len(pkt) < 9:
                return rows
            if first == 0xFF:
                raise self.error_from(pkt)
            rows.append(pkt)

    def _query_packet(self, timeout: float) -> bytes:
        pkt = self.read_packet(timeout)
        if pkt is None:
            raise WireError(f"no answer from {self.host}:{self.port} for {timeout:.0f}s")
        return pkt

    def register_replica(self, server_id: int, hostname: str = "cdc-agent", port: int = 0) -> None:
        host = hostname.encode("utf-8")[:60]
        payload = (struct.pack("<I", server_id) + bytes([len(host)]) + host + b"\x00" + b"\x00"
                   + struct.pack("<HII", port, 0, 0))
        self._command(COM_REGISTER_SLAVE, payload)
        pkt = self._must_read()
        if pkt[0] == 0xFF:
            raise self.error_from(pkt)

    def binlog_dump(self, server_id: int, filename: str, position: int, flags: int = 0) -> None:
        """Start the stream. Events then arrive through `read_event`."""
        payload = struct.pack("<IHI", min(position, 0xFFFFFFFF), flags, server_id) + filename.encode("utf-8")
        self._command(COM_BINLOG_DUMP, payload)

    def read_event(self, timeout: float) -> bytes | None:
        """The next binlog event (header + body + checksum), or None after `timeout` seconds without one.
        Raises ServerError when the server ends the stream with an error (1236: binlog not found...)."""
        pos = self._pos
        if self._end - pos > 4:
            # the usual case: a whole event in one packet is buffered; its bytes after the status byte, copied once
            buf = self._rbuf
            n = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            if buf[pos + 4] == 0x00 and 0 < n < MAX_PACKET and self._end - pos >= 4 + n:
                self._seq = (buf[pos + 3] + 1) & 0xFF
                self._pos = pos + 4 + n
                return bytes(self._view[pos + 5:pos + 4 + n])
        pkt = self.read_packet(timeout)
        if pkt is None:
            return None
        first = pkt[0]
        if first == 0x00:
            return pkt[1:]
        if first == 0xFF:
            raise self.error_from(pkt)
        if first == 0xFE and len(pkt) < 9:
            raise WireError("the server ended the binlog stream")
        raise WireError(f"unexpected packet 0x{first:02x} in the binlog stream")
