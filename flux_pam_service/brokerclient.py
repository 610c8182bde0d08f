"""The broker as pam_flux sees it: flux_pam_service.admission.Broker objects.

FluxBroker(uri, timeout)
    For a URI that is not ``local://`` (pam_flux speaks to local brokers
    through flux_pam_service.localbroker, which needs no Flux bindings).
    A connection through libflux-core's cffi module ``_flux._core`` (part of
    flux-core's Python bindings), imported only when one is made; the
    ``flux`` package itself is not imported (see the class).  Requests use
    the C calls (flux_rpc, flux_future_wait_for, each bounded by *timeout*),
    not flux.rpc.RPC, whose methods swap the process's SIGINT handler, which
    is not pam_flux's to touch inside sshd.  Errors are OSError(errno, the
    broker's error text).

AnswerFile(path)     TEST ONLY (pam_flux option ``test-answers=FILE``)
    The broker's answers read from a JSON file; the pam and systemd test tiers
    use it, the broker and node tiers use the real broker.  FILE must belong
    to root or to the caller and not be group- or other-writable.  Keys:
        "connect": {"errno": N}              connecting fails with errno N
        "attrs":   {"rank": "0", "security.owner": "999"}
        "rpc":     {TOPIC: {"response": OBJ} or {"errno": N, "error": TEXT}}
                   a topic not listed fails with ENOSYS
        "instances": {"local:///PATH": {"rpc": {...}, "connect": {...}}}
        "log":     "/path"  requests (and, through pam_flux, log lines) are
                   appended there as JSON lines: {"rpc": TOPIC, "payload":
                   ...} / {"log": PRIORITY, "text": ...}

Both are imported only when needed: neither is on a login's usual path.
"""

import errno
import os


class AnswerFile:
    """TEST ONLY: answers from a JSON file instead of a broker."""

    def __init__(self, path: str, section: dict = None, log: str = None) -> None:
        if section is None:
            section = self._load(path)
            log = section.get("log")
        self.section = section
        self.logfile = log
        connect = section.get("connect")
        if connect:
            raise OSError(connect["errno"], connect.get("error", "connect failed"))

    @staticmethod
    def _load(path: str) -> dict:
        import json

        st = os.stat(path)
        if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
            raise OSError(
                errno.EPERM, f"test answers {path}: not owned by root or writable"
            )
        with open(path) as f:
            section = json.load(f)
        if not isinstance(section, dict):
            raise OSError(errno.EPROTO, f"test answers {path}: not a JSON object")
        return section

    @classmethod
    def log_path(cls, path: str) -> str:
        """The "log" key of answer file *path*, or None (also if refused)."""
        try:
            log = cls._load(path).get("log")
        except (OSError, ValueError):
            return None
        return log if isinstance(log, str) else None

    def record(self, obj: dict) -> None:
        if self.logfile:
            import json

            with open(self.logfile, "a") as f:
                f.write(json.dumps(obj) + "\n")

    def rpc(self, topic: str, payload: dict) -> object:
        self.record({"rpc": topic, "payload": payload})
        answer = self.section.get("rpc", {}).get(topic)
        if answer is None:
            raise OSError(errno.ENOSYS, "Function not implemented")
        if "errno" in answer:
            raise OSError(
                answer["errno"], answer.get("error", os.strerror(answer["errno"]))
            )
        return answer["response"]

    def attr_get(self, name: str) -> str:
        try:
            return self.section["attrs"][name]
        except KeyError:
            raise OSError(errno.ENOENT, f"no attribute {name}") from None

    def open_instance(self, uri: str) -> "AnswerFile":
        section = self.section.get("instances", {}).get(uri)
        if section is None:
            raise OSError(errno.ENOENT, f"cannot connect to {uri}")
        return AnswerFile("", section, self.logfile)

    def close(self) -> None:
        pass


def _cstr(ffi: object, ptr: object) -> str:
    """A C string (cdata ``char *``) as str, or None for NULL."""
    if ptr == ffi.NULL:
        return None
    return ffi.string(ptr).decode(errors="replace")


class FluxBroker:
    """The broker at *uri*, through libflux-core's cffi module alone.

    ``_flux._core`` (the compiled cffi module shipped with flux-core's Python
    bindings, in the same directory as the ``flux`` package) is imported
    instead of ``flux``: importing the ``flux`` package loads yaml,
    parsedatetime, typing, email and more, which measured 0.3-1.4 s per login
    on a loaded 2-core VM against 5-50 ms for ``_flux._core``.
    """

    def __init__(self, uri: str, timeout: float) -> None:
        from _flux._core import ffi, lib

        self.ffi, self.lib = ffi, lib
        self.timeout = timeout
        self.h = ffi.NULL
        error = ffi.new("flux_error_t[1]")
        h = lib.flux_open_ex(uri.encode(), 0, error)
        if h == ffi.NULL:
            errnum = ffi.errno or errno.EIO
            text = _cstr(ffi, error[0].text) or os.strerror(errnum)
            raise OSError(errnum, f"cannot connect to {uri}: {text}")
        self.h = h

    def _fail(self, what: str, future: object = None) -> OSError:
        ffi = self.ffi
        errnum = ffi.errno or errno.EIO
        text = None
        if future is not None and errnum != errno.ETIMEDOUT:
            text = _cstr(ffi, self.lib.flux_future_error_string(future))
        if errnum == errno.ETIMEDOUT:
            text = f"{what}: no answer within {self.timeout:g}s"
        return OSError(errnum, text or os.strerror(errnum))

    def rpc(self, topic: str, payload: dict) -> object:
        import json

        ffi, lib = self.ffi, self.lib
        future = lib.flux_rpc(
            self.h, topic.encode(), json.dumps(payload).encode(), lib.FLUX_NODEID_ANY, 0
        )
        if future == ffi.NULL:
            raise self._fail(topic)
        try:
            out = ffi.new("char *[1]")
            if (
                lib.flux_future_wait_for(future, self.timeout) < 0
                or lib.flux_rpc_get(future, out) < 0
            ):
                raise self._fail(topic, future)
            if out[0] == ffi.NULL:
                return None
            return json.loads(ffi.string(out[0]).decode())
        finally:
            lib.flux_future_destroy(future)

    def attr_get(self, name: str) -> str:
        value = self.lib.flux_attr_get(self.h, name.encode())
        if value == self.ffi.NULL:
            raise self._fail(f"attribute {name}")
        return _cstr(self.ffi, value)

    def open_instance(self, uri: str) -> "FluxBroker":
        return FluxBroker(uri, self.timeout)

    def close(self) -> None:
        h, self.h = self.h, self.ffi.NULL
        if h != self.ffi.NULL:
            self.lib.flux_close(h)
