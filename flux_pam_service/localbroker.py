"""A Flux broker's local connector, spoken directly: pam_flux's client.

LocalBroker(path, timeout)
    One connection to the broker socket *path* (the PATH of a
    ``local://PATH`` URI, e.g. /run/flux/local), implementing
    flux_pam_service.admission.Broker: rpc(), attr_get(), open_instance(),
    close().  Every failure is OSError(errno, text): the broker's own errno
    and error text for a failed request, ETIMEDOUT when *timeout* seconds
    pass without an answer, EPROTO for a reply that breaks the protocol.

connect(uri, timeout) -> LocalBroker, or None when *uri* is not local://.

Why not libflux.  pam_flux runs in a fresh interpreter for every login
(pam_python), so what it imports is paid per login.  libflux-core's cffi
module costs 3.4 ms to import on a 2-core node, and the ``json`` package
(which brings ``re`` and ``enum``) 8.2 ms, against a few tenths of a
millisecond here: this module imports only the C modules ``_socket`` and
``_json`` (see flux_pam_service.jsonwire).  It covers what pam_flux needs
and nothing more: one request at a time, no events, no streaming.

Protocol (flux-core's usock and message encoding, RFC 3).
  - Connect a SOCK_STREAM AF_UNIX socket to *path*; the broker authenticates
    the peer (SO_PEERCRED) and writes one byte: 0, or an errno value that
    refuses the connection.
  - Each message is framed as a native-endian u32 magic 0xffee0012, a
    big-endian u32 length, then the message: frames, each a u8 length (or
    0xff and a big-endian u32 length) and its bytes.  Frames are, in order:
    route identities and an empty delimiter (only with the ROUTE flag), the
    topic (TOPIC flag), the payload (PAYLOAD flag; a JSON text with a
    terminating NUL), and the 20-byte PROTO frame: magic 0x8e, version 1,
    type, flags, then big-endian u32 userid, rolemask, aux1 (request: node
    ID; response: errnum), aux2 (matchtag).
  - A request goes to FLUX_NODEID_ANY (the local broker) with userid and
    rolemask unset (the broker fills them from the connection); its
    response carries the same matchtag, and either a JSON payload (errnum 0)
    or an optional error text (errnum set).
"""

import errno
import os
import sys
import time

from flux_pam_service import jsonwire

_IOBUF_MAGIC = (0xFFEE0012).to_bytes(4, sys.byteorder)
_PROTO_MAGIC = 0x8E
_PROTO_VERSION = 1
_PROTO_SIZE = 20
_REQUEST = 0x01
_RESPONSE = 0x02
_FLAG_TOPIC = 0x01
_FLAG_PAYLOAD = 0x02
_FLAG_ROUTE = 0x08
_NODEID_ANY = 0xFFFFFFFF
_USERID_UNKNOWN = 0xFFFFFFFF
_ROLE_NONE = 0
_MAX_MESSAGE = 64 << 20  # refuse to buffer a reply larger than this


def _frame(data: bytes) -> bytes:
    n = len(data)
    if n < 0xFF:
        return bytes((n,)) + data
    return b"\xff" + n.to_bytes(4, "big") + data


def encode_request(topic: str, payload: bytes, matchtag: int) -> bytes:
    """One request message for the local broker, framed for the socket.

    *payload* is the JSON text without its NUL (None: no payload).
    """
    flags = _FLAG_TOPIC
    body = _frame(topic.encode())
    if payload is not None:
        flags |= _FLAG_PAYLOAD
        body += _frame(payload + b"\0")
    proto = bytes((_PROTO_MAGIC, _PROTO_VERSION, _REQUEST, flags))
    proto += _USERID_UNKNOWN.to_bytes(4, "big") + _ROLE_NONE.to_bytes(4, "big")
    proto += _NODEID_ANY.to_bytes(4, "big") + matchtag.to_bytes(4, "big")
    body += _frame(proto)
    return _IOBUF_MAGIC + len(body).to_bytes(4, "big") + body


def decode_frames(body: bytes) -> list:
    """Split a message (without the 8-byte socket header) into its frames."""
    frames = []
    i, end = 0, len(body)
    while i < end:
        n = body[i]
        i += 1
        if n == 0xFF:
            if end - i < 4:
                raise ValueError("truncated frame length")
            n = int.from_bytes(body[i : i + 4], "big")
            i += 4
        if end - i < n:
            raise ValueError("truncated frame")
        frames.append(body[i : i + n])
        i += n
    return frames


class Response:
    """A decoded response: matchtag, errnum, topic, payload (bytes or None)."""

    __slots__ = ("matchtag", "errnum", "topic", "payload")

    def __init__(self, body: bytes) -> None:
        frames = decode_frames(body)
        if not frames or len(frames[-1]) != _PROTO_SIZE:
            raise ValueError("no PROTO frame")
        proto = frames.pop()
        if proto[0] != _PROTO_MAGIC or proto[1] != _PROTO_VERSION:
            raise ValueError("bad PROTO magic or version")
        if proto[2] != _RESPONSE:
            raise ValueError(f"message type {proto[2]:#x} is not a response")
        flags = proto[3]
        self.errnum = int.from_bytes(proto[12:16], "big")
        self.matchtag = int.from_bytes(proto[16:20], "big")
        if flags & _FLAG_ROUTE:
            try:
                frames = frames[frames.index(b"") + 1 :]
            except ValueError:
                raise ValueError("route frames without a delimiter") from None
        self.topic = None
        self.payload = None
        if flags & _FLAG_TOPIC:
            if not frames:
                raise ValueError("TOPIC flag without a topic frame")
            self.topic = frames.pop(0).decode(errors="replace")
        if flags & _FLAG_PAYLOAD:
            if not frames:
                raise ValueError("PAYLOAD flag without a payload frame")
            self.payload = frames.pop(0)
        if frames:
            raise ValueError("extra frames")


def _text(payload: bytes) -> str:
    """A NUL-terminated string payload as str."""
    if not payload or payload[-1] != 0:
        raise ValueError("payload is not a NUL-terminated string")
    return payload[:-1].decode()


class LocalBroker:
    """The broker listening on the local socket *path*."""

    def __init__(self, path: str, timeout: float) -> None:
        import _socket

        self.path = path
        self.timeout = timeout
        self._matchtag = 0
        self._buf = b""
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            try:
                sock.connect(path)
            except _socket.timeout:
                raise OSError(
                    errno.ETIMEDOUT, f"connect to local://{path}: timed out"
                ) from None
            except OSError as exc:
                raise OSError(
                    exc.errno, f"cannot connect to local://{path}: {exc.strerror}"
                ) from None
            status = self._recv_exactly(sock, 1, time.monotonic() + timeout, "connect")
            if status[0] != 0:
                raise OSError(
                    status[0],
                    f"local://{path} refused the connection: {os.strerror(status[0])}",
                )
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def _recv_exactly(self, sock: object, n: int, deadline: float, what: str) -> bytes:
        import _socket

        while len(self._buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise OSError(
                    errno.ETIMEDOUT, f"{what}: no answer within {self.timeout:g}s"
                )
            sock.settimeout(left)
            try:
                chunk = sock.recv(max(n - len(self._buf), 65536))
            except _socket.timeout:
                continue
            if not chunk:
                raise OSError(errno.ECONNRESET, f"{what}: broker closed the connection")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def request(self, topic: str, payload: bytes) -> "Response":
        """Send one request; return its response (any errnum)."""
        if self.sock is None:
            raise OSError(errno.EBADF, "connection closed")
        self._matchtag = self._matchtag % 0xFFFFFFFE + 1
        tag = self._matchtag
        deadline = time.monotonic() + self.timeout
        self.sock.settimeout(self.timeout)
        try:
            self.sock.sendall(encode_request(topic, payload, tag))
        except OSError as exc:
            raise OSError(exc.errno or errno.EIO, f"{topic}: send: {exc}") from None
        while True:
            header = self._recv_exactly(self.sock, 8, deadline, topic)
            if header[:4] != _IOBUF_MAGIC:
                raise OSError(errno.EPROTO, f"{topic}: bad message header")
            size = int.from_bytes(header[4:], "big")
            if size > _MAX_MESSAGE:
                raise OSError(errno.EPROTO, f"{topic}: reply of {size} bytes")
            body = self._recv_exactly(self.sock, size, deadline, topic)
            try:
                response = Response(body)
            except ValueError as exc:
                raise OSError(errno.EPROTO, f"{topic}: {exc}") from None
            if response.matchtag == tag:
                return response
            # Anything else (a late reply to an earlier request) is dropped.

    def rpc(self, topic: str, payload: dict) -> object:
        """Send *payload* (a JSON object) to *topic*; return the decoded reply."""
        response = self.request(topic, jsonwire.dumps(payload).encode())
        try:
            if response.errnum:
                text = _text(response.payload) if response.payload else ""
                raise OSError(response.errnum, text or os.strerror(response.errnum))
            if response.payload is None:
                return None
            return jsonwire.loads(_text(response.payload))
        except (ValueError, UnicodeDecodeError) as exc:
            raise OSError(errno.EPROTO, f"{topic}: bad payload: {exc}") from None

    def attr_get(self, name: str) -> str:
        """The broker attribute *name* (``attr.get``, as flux_attr_get)."""
        value = self.rpc("attr.get", {"name": name})
        if not isinstance(value, dict) or not isinstance(value.get("value"), str):
            raise OSError(errno.EPROTO, f"attr.get {name}: no string value")
        return value["value"]

    def open_instance(self, uri: str) -> "LocalBroker":
        broker = connect(uri, self.timeout)
        if broker is None:
            raise OSError(errno.EINVAL, f"{uri}: not a local:// URI")
        return broker

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()


def socket_path(uri: str) -> str:
    """The socket of a ``local://PATH`` URI, or None for another scheme."""
    if not uri.startswith("local://"):
        return None
    path = uri[len("local://") :]
    if not path:
        raise OSError(errno.EINVAL, f"{uri}: no socket path")
    return path


def connect(uri: str, timeout: float) -> "LocalBroker":
    """A LocalBroker for a ``local://`` *uri*; None for any other scheme."""
    path = socket_path(uri)
    return None if path is None else LocalBroker(path, timeout)
