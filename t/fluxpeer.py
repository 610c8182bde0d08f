"""A stand-in for a Flux broker's local connector, for tests of pam_flux.so.

It speaks the protocol of flux-core's usock server and message encoding (RFC
3), written from flux-core's usock.c, sendfd.c, message.c and
message_proto.c: on connect the server sends one byte, 0 or an errno that
refuses the client; then each message is a native-endian u32 magic
0xffee0012, a big-endian u32 length and the message, whose frames are (u8
length, or 0xff and a big-endian u32 length, then the bytes) the route stack
(ROUTE flag), the topic (TOPIC), the payload (PAYLOAD: JSON and a NUL) and
the 20-byte PROTO frame: magic 0x8e, version 1, type, flags, then big-endian
u32 userid, rolemask, aux1 (request: nodeid; response: errnum), aux2
(matchtag).

    peer = Peer(path, answers={TOPIC: ANSWER, ...}, attrs={"rank": "0"})
    ...                            # clients connect to local://PATH
    peer.requests                  [(topic, payload), ...] in arrival order
    peer.connections               how many clients connected
    peer.errors                    requests that broke the protocol
    peer.close()

ANSWER is one of (a callable taking the request payload may return one):
    {"response": OBJ}              a JSON payload
    {"errno": N, "error": TEXT}    an error response (TEXT optional)
    {"payload": BYTES}             a response whose payload frame is BYTES
    {"body": BYTES}                a whole message body (frames) as given
    {"wire": BYTES}                bytes written as they are, nothing else
    {"cut": N, ...}                only the first N bytes of the answer, then
                                   the connection is closed
    {"delay": S, ...}              wait S seconds first
    {"hang": True}                 read the request, never answer
    {"close": True}                close the connection without an answer
A topic not in *answers* gets ENOSYS, as from a broker without that
service; ``attr.get`` is answered from *attrs* (ENOENT for others).

*handshake* is the byte sent on connect (b"\\0"; bytes((errno,)) refuses;
b"" sends nothing and closes; None sends nothing and keeps the connection).
With *hang_up*, the connection is closed right after the greeting.
"""

import json
import os
import socket
import struct
import threading

IOBUF_MAGIC = 0xFFEE0012
PROTO_MAGIC = 0x8E
REQUEST, RESPONSE = 0x01, 0x02
TOPIC, PAYLOAD, ROUTE = 0x01, 0x02, 0x08
ENOSYS, ENOENT = 38, 2


def frame(data: bytes) -> bytes:
    if len(data) < 0xFF:
        return struct.pack("B", len(data)) + data
    return b"\xff" + struct.pack(">I", len(data)) + data


def proto(msgtype: int, flags: int, userid=0, rolemask=0, aux1=0, aux2=0) -> bytes:
    return struct.pack(
        ">BBBBIIII", PROTO_MAGIC, 1, msgtype, flags, userid, rolemask, aux1, aux2
    )


def response_body(matchtag: int, topic: str, payload=None, errnum=0) -> bytes:
    """A response message without the socket header; *payload* is bytes.

    As from a broker to a local client: the ROUTE flag with an empty route
    stack (the delimiter frame alone).  libflux matches a response to its
    RPC only if it has the flag and no route left.
    """
    flags, body = ROUTE | TOPIC, frame(b"") + frame(topic.encode())
    if payload is not None:
        flags |= PAYLOAD
        body += frame(payload)
    return body + frame(proto(RESPONSE, flags, 0, 1, errnum, matchtag))


def wire(body: bytes) -> bytes:
    return struct.pack("=I", IOBUF_MAGIC) + struct.pack(">I", len(body)) + body


def split_frames(body: bytes) -> list:
    frames, i = [], 0
    while i < len(body):
        n = body[i]
        i += 1
        if n == 0xFF:
            (n,) = struct.unpack(">I", body[i : i + 4])
            i += 4
        if i + n > len(body):
            raise ValueError("frame runs past the message")
        frames.append(body[i : i + n])
        i += n
    return frames


def recv_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError("client closed the connection")
        data += chunk
    return data


def read_request(conn: socket.socket) -> dict:
    """One request from a client: topic, payload (decoded), matchtag, nodeid."""
    header = recv_exactly(conn, 8)
    if struct.unpack("=I", header[:4])[0] != IOBUF_MAGIC:
        raise ValueError("bad message magic from the client")
    (size,) = struct.unpack(">I", header[4:])
    frames = split_frames(recv_exactly(conn, size))
    p = frames.pop()
    _, _, msgtype, flags, userid, _, nodeid, matchtag = struct.unpack(">BBBBIIII", p)
    if flags & ROUTE:
        frames = frames[frames.index(b"") + 1 :]
    topic = frames.pop(0).decode() if flags & TOPIC else ""
    payload = None
    if flags & PAYLOAD:
        raw = frames.pop(0)
        if msgtype == REQUEST:
            payload = json.loads(raw[:-1]) if raw.endswith(b"\0") else raw
        else:
            payload = raw
    return {
        "type": msgtype,
        "topic": topic,
        "payload": payload,
        "userid": userid,
        "nodeid": nodeid,
        "matchtag": matchtag,
    }


class Peer:
    """A broker stand-in listening on the unix socket *path*."""

    def __init__(self, path, answers=None, attrs=None, handshake=b"\0", hang_up=False):
        self.path = path
        self.hang_up = hang_up
        self.answers = dict(answers or {})
        self.attrs = dict({"rank": "0"} if attrs is None else attrs)
        self.handshake = handshake
        self.requests = []
        self.connections = 0
        self.errors = []
        self._conns = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if os.path.lexists(path):
            os.unlink(path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        os.chmod(path, 0o777)
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def uri(self) -> str:
        return f"local://{self.path}"

    def topics(self) -> list:
        return [t for t, _ in self.requests]

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.handshake is None:
                self._stop.wait()
                return
            if self.handshake:
                conn.sendall(self.handshake)
            if self.handshake != b"\0" or self.hang_up:
                return
            while not self._stop.is_set():
                try:
                    req = read_request(conn)
                except EOFError:
                    return
                if req["type"] != REQUEST:
                    continue  # e.g. the client's ENOSYS to a request of ours
                with self._lock:
                    self.requests.append((req["topic"], req["payload"]))
                if not self._answer(conn, req):
                    return
        except OSError:
            pass  # the client went away
        except (ValueError, struct.error) as exc:
            self.errors.append(f"bad request from the client: {exc!r}")
        finally:
            conn.close()

    def _spec(self, req: dict) -> dict:
        topic = req["topic"]
        if topic in self.answers:
            spec = self.answers[topic]
            return spec(req["payload"]) if callable(spec) else spec
        if topic == "attr.get":
            name = (req["payload"] or {}).get("name")
            if name in self.attrs:
                return {"response": {"value": self.attrs[name], "flags": 0}}
            return {"errno": ENOENT, "error": f"no attribute {name}"}
        return {"errno": ENOSYS, "error": f"Unknown service method '{topic}'"}

    def _answer(self, conn: socket.socket, req: dict) -> bool:
        """Answer one request; False when the connection is to end."""
        spec = self._spec(req)
        if spec.get("delay"):
            if self._stop.wait(spec["delay"]):
                return False
        if spec.get("hang"):
            self._stop.wait()
            return False
        if spec.get("close"):
            return False
        tag, topic = req["matchtag"], req["topic"]
        if "wire" in spec:
            data = spec["wire"]
        elif "body" in spec:
            data = wire(spec["body"])
        elif "payload" in spec:
            data = wire(response_body(tag, topic, spec["payload"]))
        elif "errno" in spec:
            text = spec.get("error")
            payload = text.encode() + b"\0" if text else None
            data = wire(response_body(tag, topic, payload, spec["errno"]))
        else:
            text = json.dumps(spec["response"]).encode() + b"\0"
            data = wire(response_body(tag, topic, text))
        if "cut" in spec:
            conn.sendall(data[: spec["cut"]])
            return False
        conn.sendall(data)
        return True

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.thread.join(5)
        if os.path.lexists(self.path):
            os.unlink(self.path)
