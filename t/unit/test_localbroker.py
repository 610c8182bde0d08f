"""flux_pam_service.localbroker: message encoding, decoding, and the client
against a protocol peer (a small server in a thread speaking usock framing).

The encoding here is written from flux-core's sendfd.c, message.c and
message_proto.c (RFC 3), independently of the module under test.
"""

import errno
import json
import os
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flux_pam_service import localbroker
from flux_pam_service.localbroker import LocalBroker, Response

IOBUF_MAGIC = 0xFFEE0012
PROTO_MAGIC = 0x8E
REQUEST, RESPONSE = 0x01, 0x02
TOPIC, PAYLOAD, ROUTE = 0x01, 0x02, 0x08


# Encoding, from the C sources ------------------------------------------------


def frame(data: bytes) -> bytes:
    if len(data) < 0xFF:
        return struct.pack("B", len(data)) + data
    return b"\xff" + struct.pack(">I", len(data)) + data


def proto(
    msgtype, flags, userid=0, rolemask=0, aux1=0, aux2=0, magic=PROTO_MAGIC, version=1
):
    return struct.pack(
        ">BBBBIIII", magic, version, msgtype, flags, userid, rolemask, aux1, aux2
    )


def response_body(
    matchtag,
    payload=None,
    errnum=0,
    topic="svc.method",
    routes=None,
    msgtype=RESPONSE,
):
    """A response message (no socket header); *payload* bytes, NUL included."""
    flags, body = 0, b""
    if routes is not None:
        flags |= ROUTE
        body += b"".join(frame(r) for r in routes) + frame(b"")
    if topic is not None:
        flags |= TOPIC
        body += frame(topic.encode())
    if payload is not None:
        flags |= PAYLOAD
        body += frame(payload)
    return body + frame(proto(msgtype, flags, 1000, 1, errnum, matchtag))


def wire(body: bytes) -> bytes:
    return struct.pack("=I", IOBUF_MAGIC) + struct.pack(">I", len(body)) + body


def json_payload(obj) -> bytes:
    return json.dumps(obj).encode() + b"\0"


def split_frames(body: bytes) -> list:
    frames, i = [], 0
    while i < len(body):
        n = body[i]
        i += 1
        if n == 0xFF:
            (n,) = struct.unpack(">I", body[i : i + 4])
            i += 4
        assert i + n <= len(body), "frame runs past the message"
        frames.append(body[i : i + n])
        i += n
    return frames


# encode_request -------------------------------------------------------------


def parse_request(data: bytes) -> dict:
    assert data[:4] == struct.pack("=I", IOBUF_MAGIC)
    (size,) = struct.unpack(">I", data[4:8])
    assert size == len(data) - 8
    frames = split_frames(data[8:])
    p = frames[-1]
    assert len(p) == 20
    magic, version, msgtype, flags, userid, rolemask, nodeid, matchtag = struct.unpack(
        ">BBBBIIII", p
    )
    return {
        "frames": frames,
        "magic": magic,
        "version": version,
        "type": msgtype,
        "flags": flags,
        "userid": userid,
        "rolemask": rolemask,
        "nodeid": nodeid,
        "matchtag": matchtag,
    }


def failing_call(path, timeout, call):
    """Connect to *path*, make *call*; return the OSError it must raise."""
    broker = LocalBroker(path, timeout)
    try:
        with pytest.raises(OSError) as exc:
            call(broker)
    finally:
        broker.close()
    return exc.value


def test_request_starts_with_native_magic_and_big_endian_length():
    data = localbroker.encode_request("attr.get", b'{"name":"rank"}', 7)
    assert data[:4] == IOBUF_MAGIC.to_bytes(4, sys.byteorder)
    assert data[4:8] == (len(data) - 8).to_bytes(4, "big")


def test_request_frames_are_topic_payload_with_nul_and_proto():
    req = parse_request(localbroker.encode_request("attr.get", b'{"name":"rank"}', 7))
    assert req["frames"][:2] == [b"attr.get", b'{"name":"rank"}\0']
    assert len(req["frames"]) == 3


def test_request_proto_is_a_request_to_any_node_with_unset_credentials():
    req = parse_request(localbroker.encode_request("a.b", b"{}", 0x01020304))
    assert (req["magic"], req["version"], req["type"]) == (0x8E, 1, REQUEST)
    assert req["flags"] == TOPIC | PAYLOAD
    assert req["userid"] == 0xFFFFFFFF
    assert req["rolemask"] == 0
    assert req["nodeid"] == 0xFFFFFFFF
    assert req["matchtag"] == 0x01020304
    assert req["frames"][-1][16:20] == b"\x01\x02\x03\x04"


def test_request_without_payload_has_only_topic_and_proto():
    req = parse_request(localbroker.encode_request("a.b", None, 1))
    assert req["flags"] == TOPIC
    assert req["frames"][:-1] == [b"a.b"]


def test_payload_of_254_bytes_with_its_nul_uses_the_short_frame():
    payload = b"x" * 253
    data = localbroker.encode_request("t", payload, 1)
    body = data[8:]
    assert body[2] == 254  # after the 1-byte topic frame "t"
    assert body[3 : 3 + 254] == payload + b"\0"


@pytest.mark.parametrize("size", [254, 255, 70000])
def test_payload_of_255_bytes_or_more_uses_the_long_frame(size):
    payload = b"y" * size  # + NUL: 255 bytes or more
    data = localbroker.encode_request("t", payload, 1)
    body = data[8:]
    assert body[2] == 0xFF
    assert body[3:7] == (size + 1).to_bytes(4, "big")
    assert body[7 : 7 + size + 1] == payload + b"\0"
    assert parse_request(data)["frames"][1] == payload + b"\0"


@given(st.lists(st.binary(max_size=600), max_size=6))
def test_decode_frames_splits_what_flux_encodes(frames):
    body = b"".join(frame(f) for f in frames)
    assert localbroker.decode_frames(body) == frames


# Response -------------------------------------------------------------------


def test_response_gives_matchtag_topic_and_payload():
    r = Response(response_body(42, json_payload({"value": "0"}), topic="attr.get"))
    assert (r.matchtag, r.errnum, r.topic) == (42, 0, "attr.get")
    assert r.payload == b'{"value": "0"}\0'


def test_response_without_payload_has_none():
    r = Response(response_body(3))
    assert r.payload is None and r.errnum == 0


def test_error_response_gives_errnum_and_text():
    r = Response(response_body(5, b"no such thing\0", errnum=errno.ENOENT))
    assert r.errnum == errno.ENOENT
    assert r.payload == b"no such thing\0"


@pytest.mark.parametrize(
    "routes", [[], [b"a1b2c3d4"], [b"0123abcd", b"1"]], ids=["delimiter", "one", "two"]
)
def test_route_frames_and_delimiter_are_skipped(routes):
    r = Response(response_body(9, json_payload([1]), topic="x.y", routes=routes))
    assert (r.matchtag, r.topic, r.payload) == (9, "x.y", b"[1]\0")


def test_a_large_response_payload_is_read_from_the_long_frame():
    big = json_payload({"pad": "z" * 100000})
    assert Response(response_body(1, big)).payload == big


@given(
    matchtag=st.integers(0, 2**32 - 1),
    errnum=st.integers(0, 2**32 - 1),
    topic=st.one_of(st.none(), st.text(min_size=1, max_size=300)),
    payload=st.one_of(st.none(), st.binary(min_size=1, max_size=600)),
    routes=st.one_of(
        st.none(), st.lists(st.binary(min_size=1, max_size=40), max_size=3)
    ),
)
def test_response_decodes_any_well_formed_message(
    matchtag, errnum, topic, payload, routes
):
    r = Response(response_body(matchtag, payload, errnum, topic, routes))
    assert (r.matchtag, r.errnum, r.topic, r.payload) == (
        matchtag,
        errnum,
        topic,
        payload,
    )


def _malformed():
    good_proto = proto(RESPONSE, TOPIC, aux2=1)
    return {
        "empty": b"",
        "no-proto-frame": frame(b"topic"),
        "short-proto": frame(b"t") + frame(good_proto[:19]),
        "long-proto": frame(b"t") + frame(good_proto + b"\0"),
        "bad-magic": frame(b"t") + frame(proto(RESPONSE, TOPIC, magic=0x8F)),
        "bad-version": frame(b"t") + frame(proto(RESPONSE, TOPIC, version=2)),
        "request-type": frame(b"t") + frame(proto(REQUEST, TOPIC)),
        "truncated-frame": frame(b"t") + b"\x14" + good_proto[:10],
        "truncated-long-length": b"\xff\x00\x00",
        "long-frame-past-end": b"\xff\x00\x00\x01\x00" + b"x" * 20,
        "extra-frame": frame(b"t") + frame(b"extra") + frame(good_proto),
        "payload-no-flag": frame(b"t") + frame(b"{}\0") + frame(good_proto),
        "topic-flag-no-frame": frame(proto(RESPONSE, TOPIC)),
        "payload-flag-no-frame": frame(b"t") + frame(proto(RESPONSE, TOPIC | PAYLOAD)),
        "route-no-delimiter": frame(b"r1")
        + frame(b"t")
        + frame(proto(RESPONSE, ROUTE | TOPIC)),
    }


@pytest.mark.parametrize("name", list(_malformed()))
def test_malformed_response_raises_value_error(name):
    with pytest.raises(ValueError):
        Response(_malformed()[name])


# A protocol peer ------------------------------------------------------------


@pytest.fixture
def sockdir():
    # AF_UNIX paths are limited to 108 bytes: pytest's tmp_path can be longer.
    d = tempfile.mkdtemp(prefix="lb.", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Peer:
    """A broker stand-in on a unix socket: *script(conn)* runs in a thread
    for the first connection, after the listening socket is up."""

    def __init__(self, path: str, script, handshake: bytes = b"\0") -> None:
        self.path = path
        self.script = script
        self.handshake = handshake
        self.requests = []
        self.error = None
        self.done = threading.Event()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(4)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.listener.settimeout(10)
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(10)
                if self.handshake:
                    conn.sendall(self.handshake)
                if self.script is not None:
                    self.script(self, conn)
                self.done.wait(10)
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def recv_request(self, conn) -> dict:
        header = recv_exactly(conn, 8)
        (size,) = struct.unpack(">I", header[4:])
        req = parse_request(header + recv_exactly(conn, size))
        req["topic"] = req["frames"][0].decode()
        req["payload"] = (
            json.loads(req["frames"][1][:-1]) if req["flags"] & PAYLOAD else None
        )
        self.requests.append(req)
        return req

    def finish(self) -> None:
        self.done.set()
        self.thread.join(10)
        self.listener.close()
        if self.error is not None:
            raise self.error


def recv_exactly(conn, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError("client closed")
        data += chunk
    return data


@pytest.fixture
def peer(sockdir):
    peers = []

    def start(script=None, handshake=b"\0"):
        p = Peer(os.path.join(sockdir, "local"), script, handshake)
        peers.append(p)
        return p

    yield start
    for p in peers:
        p.finish()


def answer(payload=None, errnum=0, pieces=1, before=b""):
    """A script answering one request with *payload* (an object) or errnum."""

    def script(peer, conn):
        req = peer.recv_request(conn)
        if errnum:
            body = response_body(req["matchtag"], payload, errnum, req["topic"])
        else:
            body = response_body(
                req["matchtag"], json_payload(payload), 0, req["topic"]
            )
        data = before + wire(body)
        step = max(1, -(-len(data) // pieces))
        for i in range(0, len(data), step):
            conn.sendall(data[i : i + step])
            if pieces > 1:
                time.sleep(0.01)

    return script


def test_connect_accepts_handshake_byte_zero(peer):
    p = peer(answer({"value": "3"}))
    broker = LocalBroker(p.path, 5)
    try:
        assert broker.attr_get("rank") == "3"
    finally:
        broker.close()
    assert p.requests[0]["topic"] == "attr.get"
    assert p.requests[0]["payload"] == {"name": "rank"}


@pytest.mark.parametrize("code", [errno.EPERM, errno.ECONNREFUSED])
def test_connect_refused_with_the_handshake_errno(peer, code):
    p = peer(handshake=bytes((code,)))
    with pytest.raises(OSError) as exc:
        LocalBroker(p.path, 5)
    assert exc.value.errno == code
    assert p.path in str(exc.value)


def test_connect_times_out_when_the_broker_never_answers_the_handshake(sockdir):
    path = os.path.join(sockdir, "local")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)  # never accepted: connect succeeds, no status byte
    try:
        t0 = time.monotonic()
        with pytest.raises(OSError) as exc:
            LocalBroker(path, 0.3)
        assert exc.value.errno == errno.ETIMEDOUT
        assert time.monotonic() - t0 < 3
    finally:
        listener.close()


def test_connect_reset_when_the_broker_closes_before_the_handshake(peer):
    p = peer(handshake=b"")
    p.done.set()  # close right after accept
    with pytest.raises(OSError) as exc:
        LocalBroker(p.path, 5)
    assert exc.value.errno == errno.ECONNRESET


def test_rpc_sends_the_request_and_returns_the_decoded_reply(peer):
    reply = {"jobs": [{"id": 2**60, "userid": 1000, "name": "é\u2028"}], "ok": True}
    p = peer(answer(reply))
    with_broker = LocalBroker(p.path, 5)
    try:
        assert (
            with_broker.rpc("job-list.list", {"max_entries": 5, "attrs": ["userid"]})
            == reply
        )
    finally:
        with_broker.close()
    req = p.requests[0]
    assert req["topic"] == "job-list.list"
    assert req["payload"] == {"max_entries": 5, "attrs": ["userid"]}
    assert (req["type"], req["nodeid"], req["userid"], req["rolemask"]) == (
        REQUEST,
        0xFFFFFFFF,
        0xFFFFFFFF,
        0,
    )


def test_rpc_returns_none_for_a_reply_without_payload(peer):
    def script(peer, conn):
        req = peer.recv_request(conn)
        conn.sendall(wire(response_body(req["matchtag"], None, 0, req["topic"])))

    p = peer(script)
    broker = LocalBroker(p.path, 5)
    try:
        assert broker.rpc("a.b", {}) is None
    finally:
        broker.close()


def test_error_reply_raises_its_errnum_and_text(peer):
    p = peer(answer(b"job 123 is not yours\0", errnum=errno.EPERM))
    err = failing_call(p.path, 5, lambda broker: broker.rpc("pam.check", {"uid": 1}))
    assert err.errno == errno.EPERM
    assert err.strerror == "job 123 is not yours"


def test_error_reply_without_text_raises_strerror(peer):
    p = peer(answer(None, errnum=errno.ENOSYS))
    err = failing_call(p.path, 5, lambda broker: broker.rpc("no.such", {}))
    assert err.errno == errno.ENOSYS
    assert err.strerror == os.strerror(errno.ENOSYS)


def test_reply_with_an_earlier_matchtag_is_skipped(peer):
    def script(peer, conn):
        req = peer.recv_request(conn)
        tag = req["matchtag"]
        stale = wire(
            response_body(tag - 1 if tag > 1 else 0xFFFFFFFE, json_payload("old"))
        )
        other = wire(response_body(tag + 7, b"late error\0", errno.EIO))
        conn.sendall(stale)
        conn.sendall(other + wire(response_body(tag, json_payload("new"))))

    p = peer(script)
    broker = LocalBroker(p.path, 5)
    try:
        assert broker.rpc("a.b", {}) == "new"
    finally:
        broker.close()


def test_each_request_has_a_new_matchtag_and_gets_its_own_reply(peer):
    def script(peer, conn):
        for n in range(3):
            req = peer.recv_request(conn)
            conn.sendall(wire(response_body(req["matchtag"], json_payload({"n": n}))))

    p = peer(script)
    broker = LocalBroker(p.path, 5)
    try:
        assert [broker.rpc("a.b", {"i": i}) for i in range(3)] == [
            {"n": 0},
            {"n": 1},
            {"n": 2},
        ]
    finally:
        broker.close()
    tags = [r["matchtag"] for r in p.requests]
    assert len(set(tags)) == 3 and 0 not in tags


@pytest.mark.parametrize("pieces", [3, 40])
def test_reply_split_across_several_sends_is_read_whole(peer, pieces):
    reply = {"pad": "q" * 300, "n": [1, 2, 3]}
    p = peer(answer(reply, pieces=pieces))
    broker = LocalBroker(p.path, 5)
    try:
        assert broker.rpc("a.b", {}) == reply
    finally:
        broker.close()


def test_reply_larger_than_64k_is_read_whole(peer):
    reply = {"pad": "w" * (200 << 10)}
    p = peer(answer(reply, pieces=7))
    broker = LocalBroker(p.path, 5)
    try:
        assert broker.rpc("a.b", {"pad": "v" * (100 << 10)}) == reply
    finally:
        broker.close()
    assert p.requests[0]["payload"] == {"pad": "v" * (100 << 10)}


def test_silent_broker_times_out_within_the_timeout(peer):
    p = peer(lambda peer, conn: peer.recv_request(conn))
    broker = LocalBroker(p.path, 0.4)
    try:
        t0 = time.monotonic()
        with pytest.raises(OSError) as exc:
            broker.rpc("a.b", {})
        elapsed = time.monotonic() - t0
    finally:
        broker.close()
    assert exc.value.errno == errno.ETIMEDOUT
    assert 0.35 <= elapsed < 3


def test_broker_stalling_mid_reply_times_out(peer):
    def script(peer, conn):
        req = peer.recv_request(conn)
        conn.sendall(wire(response_body(req["matchtag"], json_payload(1)))[:11])

    p = peer(script)
    err = failing_call(p.path, 0.4, lambda broker: broker.rpc("a.b", {}))
    assert err.errno == errno.ETIMEDOUT


@pytest.mark.parametrize("cut", [0, 5, 12], ids=["no-reply", "mid-header", "mid-body"])
def test_broker_closing_the_connection_is_a_reset(peer, cut):
    def script(peer, conn):
        req = peer.recv_request(conn)
        conn.sendall(wire(response_body(req["matchtag"], json_payload(1)))[:cut])
        conn.shutdown(socket.SHUT_WR)

    p = peer(script)
    err = failing_call(p.path, 5, lambda broker: broker.rpc("a.b", {}))
    assert err.errno == errno.ECONNRESET


SWAPPED_MAGIC = IOBUF_MAGIC.to_bytes(
    4, "big" if sys.byteorder == "little" else "little"
)


@pytest.mark.parametrize("magic", [SWAPPED_MAGIC, b"\0\0\0\0"], ids=["swapped", "zero"])
def test_bad_header_magic_is_a_protocol_error(peer, magic):
    def script(peer, conn):
        req = peer.recv_request(conn)
        data = wire(response_body(req["matchtag"], json_payload(1)))
        conn.sendall(magic + data[4:])

    p = peer(script)
    err = failing_call(p.path, 5, lambda broker: broker.rpc("a.b", {}))
    assert err.errno == errno.EPROTO


@pytest.mark.parametrize(
    "body",
    [
        frame(b"t"),
        frame(b"t") + frame(b"x") + frame(proto(RESPONSE, TOPIC, aux2=1)),
        frame(b"t") + frame(b"{}") + frame(proto(RESPONSE, TOPIC | PAYLOAD, aux2=1)),
        frame(b"t")
        + frame(b"{nope\0")
        + frame(proto(RESPONSE, TOPIC | PAYLOAD, aux2=1)),
        frame(b"t")
        + frame(b"\xff\xfe\0")
        + frame(proto(RESPONSE, TOPIC | PAYLOAD, aux2=1)),
    ],
    ids=["no-proto", "extra-frame", "payload-without-nul", "not-json", "not-utf8"],
)
def test_malformed_reply_is_a_protocol_error(peer, body):
    def script(peer, conn):
        peer.recv_request(conn)  # the first request has matchtag 1
        conn.sendall(wire(body))

    p = peer(script)
    err = failing_call(p.path, 5, lambda broker: broker.rpc("a.b", {}))
    assert err.errno == errno.EPROTO


def test_attr_get_without_a_string_value_is_a_protocol_error(peer):
    p = peer(answer({"value": 3}))
    err = failing_call(p.path, 5, lambda broker: broker.attr_get("rank"))
    assert err.errno == errno.EPROTO


def test_request_after_close_fails_with_ebadf(peer):
    p = peer()
    broker = LocalBroker(p.path, 5)
    broker.close()
    broker.close()  # twice is harmless
    with pytest.raises(OSError) as exc:
        broker.rpc("a.b", {})
    assert exc.value.errno == errno.EBADF


def test_missing_socket_fails_with_enoent_naming_the_path(sockdir):
    path = os.path.join(sockdir, "absent")
    with pytest.raises(OSError) as exc:
        LocalBroker(path, 1)
    assert exc.value.errno == errno.ENOENT
    assert path in str(exc.value)
    with pytest.raises(OSError) as exc:
        localbroker.connect(f"local://{path}", 1)
    assert exc.value.errno == errno.ENOENT
    assert path in str(exc.value)


def test_connect_opens_local_uris(peer):
    p = peer(answer({"value": "0"}))
    broker = localbroker.connect(f"local://{p.path}", 5)
    try:
        assert broker.path == p.path
        assert broker.attr_get("rank") == "0"
    finally:
        broker.close()


@pytest.mark.parametrize(
    "uri",
    [
        "ssh://host/run/flux/local",
        "tcp://10.0.0.1:8050",
        "/run/flux/local",
        "",
        "LOCAL:///x",
    ],
)
def test_connect_returns_none_for_other_schemes(uri):
    assert localbroker.connect(uri, 1) is None
    assert localbroker.socket_path(uri) is None


def test_socket_path_is_the_path_of_a_local_uri():
    assert localbroker.socket_path("local:///run/flux/local") == "/run/flux/local"


def test_socket_path_refuses_local_uri_without_a_path():
    with pytest.raises(OSError) as exc:
        localbroker.socket_path("local://")
    assert exc.value.errno == errno.EINVAL
    assert "local://" in str(exc.value)


def test_open_instance_refuses_a_uri_that_is_not_local(peer):
    p = peer()
    err = failing_call(
        p.path, 5, lambda broker: broker.open_instance("ssh://host/path")
    )
    assert err.errno == errno.EINVAL
