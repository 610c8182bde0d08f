"""The D-Bus connection's deadlines (flux_pam_service.systemd.bus).

A bus that accepts the connection and then says nothing, or says nothing
after authentication, must not hold a worker thread longer than the
timeout.  The "bus" here is a Unix socket served by a thread; what systemd
answers is the systemd tier's.
"""

import os
import socket
import threading
import time

import pytest

from flux_pam_service.systemd.bus import Bus, socket_path


@pytest.mark.parametrize(
    "address, path",
    [
        ("unix:path=/run/dbus/system_bus_socket", "/run/dbus/system_bus_socket"),
        ("unix:path=/tmp/a%2cb", "/tmp/a,b"),
        ("tcp:host=x,port=1;unix:path=/x", "/x"),
        ("unix:abstract=/tmp/dbus-1", "\0/tmp/dbus-1"),
        ("unix:guid=1,path=/y", "/y"),
    ],
)
def test_the_socket_is_the_first_unix_entry_of_the_address(address, path):
    assert socket_path(address) == path


@pytest.mark.parametrize(
    "address", ["", "tcp:host=x,port=1", "unix:", "unix:tmpdir=/t"]
)
def test_an_address_without_a_unix_socket_is_refused(address):
    with pytest.raises(ValueError):
        socket_path(address)


def serve(path, answer_auth):
    """Accept one client; answer its AUTH if asked, then say nothing more."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    stop = threading.Event()

    def run():
        conn, _ = srv.accept()
        with conn:
            if answer_auth:
                data = b""
                while b"\r\n" not in data:
                    data += conn.recv(1024)
                conn.sendall(b"OK 0123456789abcdef0123456789abcdef\r\n")
            stop.wait(10)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return srv, stop


@pytest.mark.parametrize("answer_auth", [False, True], ids=["auth", "hello"])
def test_a_bus_that_does_not_answer_times_out(tmp_path, answer_auth):
    path = str(tmp_path / "bus")
    srv, stop = serve(path, answer_auth)
    t0 = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            Bus(path, 0.3)
    finally:
        stop.set()
        srv.close()
    assert time.monotonic() - t0 < 3


def test_a_missing_socket_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        Bus(os.path.join(tmp_path, "none"), 0.3)


def messages():
    """Calls the module sends: the same few, again and again."""
    from jeepney import DBusAddress, new_method_call

    sd = DBusAddress(
        "/org/freedesktop/systemd1",
        bus_name="org.freedesktop.systemd1",
        interface="org.freedesktop.systemd1.Manager",
    )
    props = [("AllowedCPUs", ("ay", b"\x03")), ("DeviceAllow", ("a(ss)", []))]
    yield new_method_call(sd, "SetUnitProperties", "sba(sv)", ("u.slice", True, props))
    props2 = [("AllowedCPUs", ("ay", b"\x01"))]
    yield new_method_call(sd, "SetUnitProperties", "sba(sv)", ("u.slice", True, props2))
    yield new_method_call(sd, "GetUnitProcesses", "s", ("user-1000.slice",))
    yield new_method_call(sd, "ListUnits")


def test_a_cached_message_is_the_bytes_jeepney_makes_with_its_serial():
    from flux_pam_service.systemd.bus import WireCache

    cache = WireCache(size=3)
    for serial in (1, 2, 70000, 2**32 - 1):
        for msg in messages():
            assert cache.serialise(msg, serial) == msg.serialise(serial=serial)
    assert len(cache._wire) == 3  # the oldest was dropped
