"""A blocking D-Bus connection with a deadline on every step.

Built from jeepney's public parts that do no I/O: ``jeepney.auth``'s
Authenticator for the SASL exchange, ``jeepney.Parser`` for what arrives,
``Message.serialise`` for what is sent (through a WireCache: the module
sends the same few calls again and again, and serialising them is most of
its D-Bus cost).  Connecting, authenticating, the
bus's ``Hello`` and every receive are bounded by the caller's timeout
(jeepney's own blocking connection says Hello without one), and nothing of
jeepney's private internals is used.  One connection per thread.
"""

import itertools
import socket
import struct
import time
from collections import OrderedDict
from typing import Any, Callable, Optional

from jeepney import HeaderFields, Message, Parser
from jeepney.auth import BEGIN, Authenticator
from jeepney.bus_messages import message_bus


def socket_path(address: str) -> str:
    """The socket of the first ``unix:`` entry of a D-Bus *address*.

    ``unix:path=PATH`` gives PATH, ``unix:abstract=NAME`` the abstract socket
    NAME (values are %-unescaped).  ValueError for anything else.
    """
    for entry in address.split(";"):
        transport, _, params = entry.partition(":")
        if transport != "unix":
            continue
        for param in params.split(","):
            key, _, value = param.partition("=")
            if key in ("path", "abstract") and value:
                value = _unescape(value)
                return value if key == "path" else "\0" + value
    raise ValueError("no unix:path= or unix:abstract= entry")


def _unescape(value: str) -> str:
    """D-Bus address %-escapes (%2f is "/")."""
    raw = value.encode()
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == ord("%") and i + 2 < len(raw):
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode()


class WireCache:
    """Serialised messages, reused with the serial of each send.

    jeepney serialises a message in pure Python, header fields through
    variants: about 1 ms of CPU per SetUnitProperties on a loaded node.  A
    message is the same bytes each time it is sent but for its serial, a
    uint32 at offset 8 of the D-Bus header, so the bytes of a message with
    the same header fields and body are kept (the last *size* of them) and
    the serial written in.  Messages carrying file descriptors are not kept.
    """

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._wire: OrderedDict[Any, bytes] = OrderedDict()

    def serialise(self, msg: Message, serial: int) -> bytes:
        """msg.serialise(serial=serial), from the cache when it can be."""
        header = msg.header
        if HeaderFields.unix_fds in header.fields:
            return msg.serialise(serial=serial)
        key = (
            header.message_type,
            header.flags,
            tuple(sorted(header.fields.items())),
            repr(msg.body),
        )
        data = self._wire.get(key)
        if data is None:
            data = msg.serialise(serial=serial)
            self._wire[key] = data
            if len(self._wire) > self.size:
                self._wire.popitem(last=False)
            return data
        self._wire.move_to_end(key)
        code = "<I" if data[:1] == b"l" else ">I"
        return data[:8] + struct.pack(code, serial) + data[12:]


class Bus:
    """One connection to a message bus: send messages, receive by a deadline.

    Raises TimeoutError when a step does not finish in time, and OSError
    (ConnectionResetError at the end of the stream) when the connection
    fails; a connection that failed must be closed.
    """

    def __init__(self, path: str, timeout: float) -> None:
        self.timeout = timeout
        self._serials = itertools.count(1)
        self._wire = WireCache()
        self._parser = Parser()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            deadline = time.monotonic() + timeout
            self._bounded(deadline, self._sock.connect, path)
            auth = Authenticator()
            for request in auth:
                self._bounded(deadline, self._sock.sendall, request)
                auth.feed(self._recv(deadline))
            self._bounded(deadline, self._sock.sendall, BEGIN)
            serial = self.send(message_bus.Hello())
            while True:
                reply = self.receive(deadline)
                if reply.header.fields.get(HeaderFields.reply_serial) == serial:
                    break
        except BaseException:
            self._sock.close()
            raise
        self.unique_name = reply.body[0]

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()

    def next_serial(self) -> int:
        """The serial of the next message sent."""
        return next(self._serials)

    def send(self, msg: Message, serial: Optional[int] = None) -> int:
        """Send *msg* (sendall() bounded by the timeout); return its serial."""
        serial = self.next_serial() if serial is None else serial
        data = self._wire.serialise(msg, serial)
        self._bounded(time.monotonic() + self.timeout, self._sock.sendall, data)
        return serial

    def receive(self, deadline: float) -> Message:
        """The next message; TimeoutError once *deadline* (a time.monotonic()
        value) has passed with nothing complete to return."""
        while True:
            msg = self._parser.get_next_message()
            if msg is not None:
                return msg
            self._parser.add_data(self._recv(deadline))

    def _recv(self, deadline: float) -> bytes:
        data = self._bounded(deadline, self._sock.recv, 65536)
        if not data:
            raise ConnectionResetError("the bus closed the connection")
        return data

    def _bounded(self, deadline: float, fn: Callable[..., Any], *args: Any) -> Any:
        """Call a socket method with what is left until *deadline*."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no answer in time")
        self._sock.settimeout(left)
        try:
            return fn(*args)
        except socket.timeout:
            raise TimeoutError("no answer in time") from None
