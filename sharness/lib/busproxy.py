"""A byte-forwarding proxy for a unix-socket D-Bus address (test helper).

Usage: python3 busproxy.py LISTEN_PATH TARGET_PATH PIDFILE

Listens on LISTEN_PATH and forwards every connection, byte for byte, to
TARGET_PATH (the test bed's system bus socket).  The broker tier points
DBUS_SYSTEM_BUS_ADDRESS at LISTEN_PATH; killing the proxy (SIGTERM) closes
every connection and removes LISTEN_PATH, so systemd becomes unreachable for
the module exactly as if the bus had gone away; starting it again makes it
reachable.  D-Bus authentication (EXTERNAL, SO_PEERCRED) sees the proxy's
credentials, which are those of the test (root).  File descriptor passing
is not forwarded; the module does not use it.
"""

import os
import selectors
import signal
import socket
import sys


def main() -> int:
    listen_path, target, pidfile = sys.argv[1:4]
    try:
        os.unlink(listen_path)
    except FileNotFoundError:
        pass
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(listen_path)
    server.listen(64)
    server.setblocking(False)
    with open(pidfile, "w") as f:
        f.write(f"{os.getpid()}\n")
    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ, None)
    peers: dict = {}

    def stop(*_args: object) -> None:
        try:
            os.unlink(listen_path)
        except FileNotFoundError:
            pass
        for s in list(peers):
            s.close()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def close_pair(s: socket.socket) -> None:
        other = peers.pop(s, None)
        for x in (s, other):
            if x is None:
                continue
            try:
                sel.unregister(x)
            except (KeyError, ValueError):
                pass
            peers.pop(x, None)
            x.close()

    while True:
        for key, _ in sel.select():
            s = key.fileobj
            if s is server:
                try:
                    client, _ = server.accept()
                except BlockingIOError:
                    continue
                upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    upstream.connect(target)
                except OSError:
                    client.close()
                    upstream.close()
                    continue
                peers[client] = upstream
                peers[upstream] = client
                sel.register(client, selectors.EVENT_READ, None)
                sel.register(upstream, selectors.EVENT_READ, None)
                continue
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data:
                close_pair(s)
                continue
            try:
                peers[s].sendall(data)
            except (OSError, KeyError):
                close_pair(s)


if __name__ == "__main__":
    sys.exit(main())
