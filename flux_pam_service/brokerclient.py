"""The broker as pam_flux sees it: flux_pam_service.admission.Broker objects.

FluxBroker(uri, timeout)
    A connection through the Flux Python bindings, imported only when one is
    made.  Requests use the raw C calls (flux_rpc, flux_future_wait_for, each
    bounded by *timeout*) rather than flux.rpc.RPC, whose methods swap the
    process's SIGINT handler, which is not pam_flux's to touch inside sshd.
    Errors are OSError(errno, the broker's error text).

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

Kept out of pam/pam_flux.py, which pam_python compiles from source for every
PAM handle, so this code is loaded from bytecode.
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


def _text(value: object, ffi: object) -> str:
    """A C string returned through flux.core.inner.raw, as str (or None).

    The raw wrapper already turns a non-NULL ``char *`` result into bytes and
    NULL into None; a cdata pointer is converted here too in case it did not.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if value == ffi.NULL:
        return None
    return ffi.string(value).decode(errors="replace")


class FluxBroker:
    """The broker at *uri*, through the Flux Python bindings."""

    def __init__(self, uri: str, timeout: float) -> None:
        import flux

        self.timeout = timeout
        self.handle = flux.Flux(uri)

    def rpc(self, topic: str, payload: dict) -> object:
        import json

        from flux.core.inner import ffi, raw

        future = raw.flux_rpc(
            self.handle.handle, topic, json.dumps(payload), raw.FLUX_NODEID_ANY, 0
        )
        try:
            try:
                raw.flux_future_wait_for(future, self.timeout)
                out = ffi.new("char *[1]")
                raw.flux_rpc_get(future, out)
            except OSError as exc:
                text = None
                if exc.errno != errno.ETIMEDOUT:
                    text = _text(raw.flux_future_error_string(future), ffi)
                raise OSError(exc.errno, text or exc.strerror) from None
            if out[0] == ffi.NULL:
                return None
            return json.loads(ffi.string(out[0]).decode())
        finally:
            raw.flux_future_destroy(future)

    def attr_get(self, name: str) -> str:
        return self.handle.attr_get(name)

    def open_instance(self, uri: str) -> "FluxBroker":
        return FluxBroker(uri, self.timeout)

    def close(self) -> None:
        # flux.Flux.close() raises RuntimeError by design (flux-core 0.88);
        # clearing the wrapper's C handle runs flux_close() now instead of
        # whenever the object happens to be collected.
        handle, self.handle = self.handle, None
        if handle is not None:
            handle.handle = None
