"""pam_flux.so against a broker that answers badly: refused, closed,
malformed, truncated, oversized and slow answers at the wire level (the
stand-in peer, t/fluxpeer.py).  Each one refuses the login, telling the user
the jobs cannot be checked, within the timeout."""

import errno
import json
import pwd
import shutil
import struct
import time

import pytest
from fluxpeer import IOBUF_MAGIC, PAYLOAD, REQUEST, RESPONSE, TOPIC, frame, proto, wire

USER = "nobody"
UID = pwd.getpwnam(USER).pw_uid
UNCHECKED = (
    f"Access denied: the jobs of user {USER} on this node cannot be checked"
    " right now; try again later"
)
ADMIT = {"admitted": True, "jobs": [1234]}
LOG_ERR = 3


def refused(rig, options=(), within=10.0):
    """The account step refuses with the 'cannot be checked' message in
    less than *within* seconds; returns the error log line."""
    rig.stack(list(options))
    t0 = time.monotonic()
    res = rig.expect(USER, [("account", "PAM_PERM_DENIED")])
    assert time.monotonic() - t0 < within
    assert res.errors == [UNCHECKED]
    lines = [t for p, t in res.logs if p == LOG_ERR]
    assert len(lines) == 1, res.logs
    return lines[0]


def json_payload(obj) -> bytes:
    return json.dumps(obj).encode() + b"\0"


# --- connecting --------------------------------------------------------------


def test_a_broker_that_refuses_the_greeting_refuses_the_login(rig):
    rig.peer(handshake=bytes((errno.EPERM,)))
    line = refused(rig)
    assert "refused the connection: Operation not permitted (EPERM)" in line


def test_a_broker_that_closes_before_the_greeting(rig):
    rig.peer(handshake=b"")
    assert "closed the connection (ECONNRESET)" in refused(rig)


def test_a_broker_that_never_greets_is_given_up_after_the_timeout(rig):
    rig.peer(handshake=None)
    line = refused(rig, ["timeout=300ms"], within=5)
    assert "no answer within 0.3s (ETIMEDOUT)" in line


def test_a_socket_nobody_listens_on(rig, tmp_path):
    import socket

    path = f"{rig.sockdir}/stale"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()  # the file stays, nobody listens: ECONNREFUSED
    rig.env["FLUX_URI"] = f"local://{path}"
    assert "Connection refused (ECONNREFUSED)" in refused(rig, within=5)


def test_a_broker_gone_after_the_greeting_does_not_kill_the_application(rig):
    """Writing the request to a closed connection raises SIGPIPE, which
    pam_flux blocks: pamtester (SIGPIPE not ignored) must live to report."""
    if shutil.which("pamtester") is None:
        pytest.skip("pamtester not installed")
    rig.peer(hang_up=True)
    rig.stack()
    for _ in range(5):
        proc = rig.pamtester(USER, "acct_mgmt")
        assert proc.returncode == 1, (proc.returncode, proc.stderr)
        assert UNCHECKED in proc.stderr


# --- the answer --------------------------------------------------------------


def test_a_broker_that_closes_instead_of_answering(rig):
    rig.peer({"pam.check": {"close": True}})
    assert "pam.check" in refused(rig)


@pytest.mark.parametrize(
    "cut", [3, 8, 20, 60], ids=["header", "length", "frames", "payload"]
)
def test_a_truncated_answer(rig, cut):
    rig.peer({"pam.check": {"response": ADMIT, "cut": cut}})
    assert "pam.check" in refused(rig, ["timeout=2s"], within=8)


def malformed_bodies():
    good = proto(RESPONSE, TOPIC | PAYLOAD | 0x08, 0, 1, 0, 1)
    route = frame(b"")
    return {
        "no-proto-frame": route + frame(b"pam.check") + frame(json_payload(ADMIT)),
        "short-proto": route + frame(b"pam.check") + frame(good[:19]),
        "bad-proto-magic": route + frame(b"pam.check") + frame(b"\x8f" + good[1:]),
        "bad-version": route
        + frame(b"pam.check")
        + frame(good[:1] + b"\x02" + good[2:]),
        "a-request": route
        + frame(b"pam.check")
        + frame(json_payload(ADMIT))
        + frame(proto(REQUEST, TOPIC | PAYLOAD | 0x08, 0, 1, 0, 1)),
        "payload-flag-without-frame": route + frame(b"pam.check") + frame(good),
        "frame-past-the-end": route + b"\xff\x00\x00\x10\x00abc",
    }


@pytest.mark.parametrize("name", list(malformed_bodies()))
def test_a_malformed_message_is_not_taken_for_an_answer(rig, name):
    rig.peer({"pam.check": {"body": malformed_bodies()[name]}})
    refused(rig, ["timeout=1s"], within=8)


@pytest.mark.parametrize(
    "payload",
    [b"{nope\0", b'{"admitted": true}', b"\xff\xfe\0", b"[true]\0", b"\0", b"null\0"],
    ids=["not-json", "no-nul", "not-utf8", "array", "empty", "null"],
)
def test_a_payload_that_is_not_a_json_object(rig, payload):
    rig.peer({"pam.check": {"payload": payload}})
    assert "pam.check" in refused(rig)


def test_a_bad_socket_header_magic(rig):
    swapped = struct.pack(">I", IOBUF_MAGIC)
    data = wire(b"")
    rig.peer({"pam.check": {"wire": swapped + data[4:]}})
    refused(rig, ["timeout=1s"], within=8)


def test_an_answer_to_another_request_is_not_taken(rig):
    """Only a response with the request's matchtag answers it."""

    def other(req):
        body = frame(b"") + frame(b"pam.check") + frame(json_payload(ADMIT))
        flags = TOPIC | PAYLOAD | 0x08
        return {"body": body + frame(proto(RESPONSE, flags, 0, 1, 0, 77))}

    rig.peer({"pam.check": other})
    assert "no answer within 0.5s" in refused(rig, ["timeout=500ms"], within=6)


def test_an_error_answer_with_a_huge_text(rig):
    rig.peer({"pam.check": {"errno": errno.EIO, "error": "x" * 200000}})
    line = refused(rig)
    assert line.startswith("cannot check jobs of user") and len(line) < 1000


# --- oversized ---------------------------------------------------------------


def test_an_answer_listing_100k_jobs_is_read_and_admits(rig):
    jobs = list(range(10**12, 10**12 + 100000))
    rig.peer({"pam.check": {"response": {"admitted": True, "jobs": jobs}}})
    rig.stack(["debug"])
    res = rig.expect(USER, [("account", "PAM_SUCCESS")])
    granted = [t for t in res.texts if t.startswith("access granted")]
    assert granted and len(granted[0]) < 300


def test_a_refusal_message_of_a_megabyte_is_cut_short(rig):
    answer = {"admitted": False, "message": "Access denied: " + "y" * (1 << 20)}
    rig.peer({"pam.check": {"response": answer}})
    rig.stack()
    res = rig.expect(USER, [("account", "PAM_PERM_DENIED")])
    assert res.errors[0].startswith("Access denied: yyy")
    assert len(res.errors[0]) <= 480


@pytest.mark.parametrize("size", [256 << 20, 0xFFFFFFF0], ids=["256MiB", "4GiB"])
def test_an_announced_huge_answer_that_never_comes(rig, size):
    header = struct.pack("=I", IOBUF_MAGIC) + struct.pack(">I", size)
    rig.peer({"pam.check": {"wire": header + b"\x01" * 64}})
    line = refused(rig, ["timeout=500ms"], within=8)
    assert "pam.check" in line


# --- slow --------------------------------------------------------------------


def test_an_answer_dripping_in_past_the_timeout(rig):
    data = wire(
        frame(b"")
        + frame(b"pam.check")
        + frame(json_payload(ADMIT))
        + frame(proto(RESPONSE, TOPIC | PAYLOAD | 0x08, 0, 1, 0, 1))
    )

    def drip(req):
        return {"wire": data[:10], "delay": 0.0}

    rig.peer({"pam.check": drip})
    assert "no answer within 0.4s" in refused(rig, ["timeout=400ms"], within=6)


def test_a_slow_answer_within_the_timeout_admits(rig):
    rig.peer({"pam.check": {"response": ADMIT, "delay": 0.8}})
    rig.stack(["timeout=3s"])
    rig.expect(USER, [("account", "PAM_SUCCESS")])


def test_each_request_has_its_own_timeout(rig):
    """pam.check, attr.get and job-list.list each wait up to the timeout."""
    job = {"id": 5, "userid": UID, "ranks": "0", "state": 16}
    rig.peer(
        {
            "pam.check": {"errno": errno.ENOSYS, "delay": 0.3},
            "job-list.list": {"response": {"jobs": [job]}, "delay": 0.3},
        }
    )
    rig.stack(["timeout=500ms"])
    rig.expect(USER, [("account", "PAM_SUCCESS")])


# --- session step ------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [{"payload": b"{\0"}, {"close": True}, {"hang": True}],
    ids=["not-json", "closed", "silent"],
)
def test_a_bad_config_get_answer_refuses_the_session(rig, answer):
    job = {"id": 5, "userid": UID, "ranks": "0", "state": 16}
    rig.peer({"job-list.list": {"response": {"jobs": [job]}}, "config.get": answer})
    rig.stack(["timeout=500ms"])
    res = rig.expect(
        USER, [("account", "PAM_SUCCESS"), ("open_session", "PAM_SESSION_ERR")]
    )
    assert res.errors == [
        f"Access denied: cannot set up a session for user {USER} on this node"
    ]
