"""pam_flux's implementation, loaded from bytecode by pam/pam_flux.py.

pam/pam_flux.py is the file named in /etc/pam.d (installed as
/usr/lib/flux-pam/pam_flux.py).  pam_python compiles that file from source
for every PAM handle, so it only puts ``pythonpath=`` directories on
sys.path, imports this module and calls:

    dispatch(phase, pamh, argv, sentinels) -> PAM code
        phase "account" (pam_sm_acct_mgmt), "session" (pam_sm_open_session),
        "auth", "setcred", "password" (PAM_IGNORE, or PAM_SERVICE_ERR for bad
        options)
    end(pamh, sentinels)                                 pam_sm_end

*sentinels* is the loader's own dict (see "Sentinel").  The options, the
broker protocol (``pam.check``, ``pam.attach``) and every decision are in
flux_pam_service.admission; this module only talks to PAM, the broker,
systemd and the lock directory.

Finding the package.  pam_python starts Debian's /usr/bin/python3 with the
environment ignored (PYTHONPATH has no effect) but with site-packages, so
flux_pam_service is imported from /usr/lib/python3/dist-packages (or
/usr/local/lib/python3.11/dist-packages) where ``make install`` puts it.  The
option ``pythonpath=DIR[:DIR...]`` puts absolute directories in front of
sys.path first: for a source tree, and for Flux's Python bindings when they
are not in dist-packages and the broker URI is not ``local://``.

The broker.  For a ``local://PATH`` URI (the default, and whatever
FLUX_URI names on a node) the broker is spoken to directly over its socket
(flux_pam_service.localbroker: no libflux, no ``json`` package).  Any other
scheme goes through libflux-core's cffi module ``_flux._core``
(flux_pam_service.brokerclient.FluxBroker).

Account (acct_mgmt).  Root is admitted at once; an unknown user gets
PAM_USER_UNKNOWN; anyone else is checked with admission.check_account()
against the broker at $FLUX_URI (else local:///run/flux/local): ``pam.check``,
or ``job-list.list`` when the module is not loaded (then a marker whose first
line is ``deny: TEXT`` refuses with TEXT).  A denial sends "Access denied:
user USER has no active jobs on this node" (or the module's refusal message)
through the conversation, logs to syslog (LOG_AUTHPRIV) and returns
PAM_PERM_DENIED.

Session (open_session).  Only for users this PAM handle's account phase
admitted as job owners; everyone else gets PAM_IGNORE.  With
``pam.manage-user-slice`` true (as the module's pam.check answer gave it,
else as the broker's ``config.get`` gives it, or the ``config=`` file) it
starts ``PREFIX-PID.scope`` in
``user-UID.slice`` holding this process (sshd's privileged session process),
then confirms it with ``pam.attach`` or, if the module is not loaded, with the
marker LOCKDIR/uid.UID.active read under the per-user lock; a refusal message
(``{"attached": false, "message"}``, a ``deny:`` line) is shown to the user.
On refusal or failure it moves this process back to the cgroup it came from,
stops the scope and returns PAM_SESSION_ERR.  On success it sets
XDG_RUNTIME_DIR and DBUS_SESSION_BUS_ADDRESS.  close_session returns
PAM_SUCCESS: systemd collects the scope when its last process exits.

Sentinel.  pam_python offers no pam_set_data()/pam_get_data().  It does keep
one module namespace per PAM handle and module path: it executes the module
file once per handle and stores the module with pam_set_data(pamh,
"libpam_python.<path>") until pam_end(), and the account and session lines of
one handle share it when they name the same path.  The sentinel is therefore
a global of pam/pam_flux.py, a dict keyed by the handle address (pamh.pamh)
holding (user, uid, manage) for the job owner it admitted, manage being
the module's pam.manage-user-slice (None after a job-list answer); end()
drops it.  Like
pam_set_data() it never reaches the user's environment (pamh.env would), and
like it, it is lost if the application runs account and session in different
processes (sshd with keyboard-interactive authentication; see
pam_slurm_adopt's notes on AuthenticationMethods).

Import cost on the account path (``python3 -X importtime``, bytecode cached,
cumulative, minimum of 15 runs in a clean Debian 12 node on a 2-core VM):
flux_pam_service.admission 1.3 ms, localbroker with jsonwire 0.5 ms
(``_socket`` 0.2, ``_json`` 0.3); ``pwd`` is built in and ``syslog`` 0.05 ms;
no module on it imports typing, re, json or __future__.  What it replaced:
``_flux._core`` 3.4 ms and ``json`` 8.2 ms (``re`` 6.8, ``enum`` 4.3).  In
all, pam_flux adds 8.8 M user-space instructions to a pamtester login over
a no-op pam_python module (88.2 M; bench/admission.py).  The session path,
only for admitted job owners, adds flux_pam_service.systemd (jeepney, which
brings socket, enum and typing) and flux_pam_service.lockdir, and
flux_pam_service.config (tomllib, glob, re) only when the module did not
give manage-user-slice.

Test only: ``test-answers=FILE`` makes pam_flux read the broker's answers
from a JSON file (flux_pam_service.brokerclient.AnswerFile) instead of asking
the broker; every use is logged at LOG_WARNING.
"""

import errno
import os

from flux_pam_service import admission


def _syslog(priority: int, text: str) -> None:
    import syslog

    syslog.syslog(syslog.LOG_AUTHPRIV | priority, text)


class _Call:
    """One pam_sm_* call: options, logging, applying a Decision."""

    def __init__(self, pamh: object, argv: list, phase: str) -> None:
        self.pamh = pamh
        self.phase = phase
        self.options = None
        self.logfile = None
        try:
            self.service = pamh.service
        except pamh.exception:
            self.service = None
        try:
            self.options = admission.parse_options(argv[1:])  # argv[0]: the loader
        except admission.OptionError as exc:
            self.error = str(exc)
            self.log(admission.LOG_ERR, self.error)
            return
        self.error = None
        if self.options.test_answers:
            from flux_pam_service import brokerclient

            self.logfile = brokerclient.AnswerFile.log_path(self.options.test_answers)
            self.log(
                admission.LOG_WARNING,
                f"test-answers={self.options.test_answers}: TEST ONLY,"
                " the broker is not consulted",
            )

    def log(self, priority: int, text: str) -> None:
        if self.options is None or admission.loggable(self.options, priority):
            _syslog(priority, admission.format_log(self.service, self.phase, text))
        if self.logfile:
            import json

            with open(self.logfile, "a") as f:
                f.write(json.dumps({"log": priority, "text": text}) + "\n")

    def broker(self) -> object:
        opts = self.options
        if opts.test_answers:
            from flux_pam_service import brokerclient

            return brokerclient.AnswerFile(opts.test_answers)
        from flux_pam_service import localbroker

        uri = admission.broker_uri(os.environ)
        broker = localbroker.connect(uri, opts.timeout)
        if broker is None:
            from flux_pam_service import brokerclient

            broker = brokerclient.FluxBroker(uri, opts.timeout)
        return broker

    def user(self) -> tuple:
        import pwd

        try:
            user = self.pamh.user
        except self.pamh.exception:
            user = None
        if not user:
            return None, None
        try:
            return user, pwd.getpwnam(user).pw_uid
        except KeyError:
            return user, None

    def apply(self, decision: object) -> int:
        for priority, text in decision.logs:
            self.log(priority, text)
        if decision.message:
            pamh = self.pamh
            try:
                pamh.conversation(pamh.Message(pamh.PAM_ERROR_MSG, decision.message))
            except pamh.exception as exc:
                self.log(admission.LOG_ERR, f"unable to converse with app: {exc}")
        for key, value in decision.env:
            self.pamh.env[key] = value
        return getattr(self.pamh, decision.result)


def _bare(exc: BaseException) -> BaseException:
    """Drop *exc*'s traceback before keeping it beyond its except block.

    A traceback holds frames, and through them the PamHandle object.  Should
    that outlive pam_end(), which unloads pam_python.so and with it the code
    that frees PamHandle objects, the process crashes when Python frees it
    later (observed: SIGSEGV at exit of a Python PAM application).
    """
    exc.__traceback__ = None
    exc.__context__ = exc.__cause__ = None
    return exc


def _check(call: _Call, uid: int) -> object:
    """Ask the broker; return a Verdict, or the exception that stopped it."""
    try:
        broker = call.broker()
        try:
            return admission.check_account(broker, uid, call.options)
        finally:
            broker.close()
    except Exception as exc:  # any failure is a generic failure
        return _bare(exc)


def _marker_verdict(call: _Call, uid: int, verdict: object) -> object:
    """Fallback account: a marker's deny line refuses a job owner."""
    from flux_pam_service import lockdir

    try:
        text = lockdir.marker_deny(uid, call.options.lock_dir)
    except OSError as exc:
        return _bare(exc)
    if text is None:
        return verdict
    return admission.Verdict(admission.NONE, (), "marker", verdict.notes, message=text)


def acct_mgmt(pamh: object, argv: list, sentinels: dict) -> int:
    """Admit root and users with a running job on this node."""
    call = _Call(pamh, argv, "account")
    if call.error:
        return pamh.PAM_SERVICE_ERR
    sentinels.pop(pamh.pamh, None)
    user, uid = call.user()
    decision = admission.decide_account(user, uid, call.service, None, call.options)
    if decision is None:
        outcome = _check(call, uid)
        if (
            getattr(outcome, "source", None) == "job-list"
            and outcome.kind == admission.OWNER
        ):
            outcome = _marker_verdict(call, uid, outcome)
        decision = admission.decide_account(
            user, uid, call.service, outcome, call.options
        )
    if decision.sentinel:
        sentinels[pamh.pamh] = (user, uid, outcome.manage)
    return call.apply(decision)


def _own_cgroup() -> str:
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return None


def _leave_scope(call: _Call, cgroup: str) -> None:
    """Move this process back to *cgroup* so stopping the scope spares it."""
    if cgroup is None:
        call.log(admission.LOG_ERR, "cgroup unknown: stopping the scope kills us")
        return
    try:
        with open(
            os.path.join("/sys/fs/cgroup", cgroup.lstrip("/"), "cgroup.procs"), "w"
        ) as f:
            f.write(str(os.getpid()))
    except OSError as exc:
        call.log(admission.LOG_ERR, f"cannot move back to {cgroup}: {exc}")


def _confirm(call: _Call, uid: int, scope: str) -> tuple:
    """Confirm *scope*; return (stage, error, how)."""
    opts = call.options
    try:
        broker = call.broker()
        try:
            message = admission.parse_attach_response(
                broker.rpc("pam.attach", {"uid": uid, "scope": scope})
            )
        finally:
            broker.close()
        if message is not None:
            return admission.DENIED, OSError(errno.EPERM, message), "pam.attach"
        return admission.ATTACHED, None, "pam.attach"
    except ValueError as exc:
        return admission.CONFIRM, _bare(exc), "pam.attach"
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.ESRCH):
            return admission.REFUSED, _bare(exc), "pam.attach"
        if exc.errno != errno.ENOSYS:
            return admission.CONFIRM, _bare(exc), "pam.attach"
    from flux_pam_service import lockdir

    try:
        with lockdir.user_lock(uid, opts.lock_dir, opts.timeout):
            present = lockdir.has_marker(uid, opts.lock_dir)
            deny = lockdir.marker_deny(uid, opts.lock_dir) if present else None
    except OSError as exc:
        return admission.CONFIRM, _bare(exc), "marker"
    if deny is not None:
        return admission.DENIED, OSError(errno.EPERM, deny), "marker"
    return (admission.ATTACHED if present else admission.REFUSED), None, "marker"


def _open_scope(call: _Call, user: str, uid: int) -> object:
    opts = call.options
    from flux_pam_service import systemd

    pid = os.getpid()
    scope = admission.scope_name(opts.scope_prefix, pid)
    origin = _own_cgroup()
    bus = systemd.Systemd(timeout=opts.timeout)
    try:
        job = None
        try:
            job = bus.start_transient_scope(
                scope,
                admission.slice_name(uid),
                [pid],
                properties=[("Description", ("s", f"pam_flux login of {user}"))],
            )
            result = bus.wait_job(job, opts.timeout)
            if result != "done":
                raise OSError(errno.EIO, f"start job of {scope}: {result}")
            stage, error, how = _confirm(call, uid, scope)
        except OSError as exc:
            stage, error, how = admission.SCOPE, _bare(exc), ""
        if stage != admission.ATTACHED and job is not None:
            _leave_scope(call, origin)
            try:
                bus.wait_job(bus.stop_unit(scope), opts.timeout)
            except OSError as exc:
                call.log(admission.LOG_ERR, f"cannot stop {scope}: {exc}")
        return admission.decide_session(user, uid, stage, error, scope, how)
    finally:
        bus.close()


def open_session(pamh: object, argv: list, sentinels: dict) -> int:
    """Put an admitted job owner's login into a scope in the user's slice."""
    call = _Call(pamh, argv, "session")
    if call.error:
        return pamh.PAM_SESSION_ERR
    user, uid = call.user()
    sentinel = sentinels.get(pamh.pamh)
    decision = admission.decide_session_start(
        user, uid, call.service, sentinel, call.options
    )
    if decision is not None:
        return call.apply(decision)
    manage = sentinel[2]
    if manage is None:
        # The module did not say (job-list fallback): ask the broker for the
        # config in force, as the drop-ins do (or read config=).  In module
        # mode the module's answer is used, the config it acts on.
        manage, error = _manage_user_slice(call)
        if error is not None:
            return call.apply(
                admission.decide_session(user, uid, admission.CONFIG, error)
            )
    if not manage:
        return call.apply(admission.decide_session(user, uid, admission.MANAGE_OFF))
    # The lock directory is checked in service mode too: a directory others
    # can write means the node is not in the state this module relies on.
    from flux_pam_service import lockdir

    try:
        lockdir.check_dir(call.options.lock_dir)
    except OSError as exc:
        return call.apply(
            admission.decide_session(user, uid, admission.LOCKDIR, _bare(exc))
        )
    return call.apply(_open_scope(call, user, uid))


def _manage_user_slice(call: _Call) -> tuple:
    """(pam.manage-user-slice, None) from the broker or config=, or (None, error)."""
    from flux_pam_service import config

    try:
        if call.options.config is not None:
            cfg = config.load(call.options.config, strict=False)
        else:
            broker = call.broker()
            try:
                cfg = config.from_dict(broker.rpc("config.get", {}), "instance config")
            finally:
                broker.close()
    except (config.ConfigError, OSError) as exc:
        return None, _bare(exc)
    return cfg.manage_user_slice, None


def not_an_auth_module(pamh: object, argv: list, phase: str) -> int:
    """auth, setcred, password: PAM_IGNORE, or PAM_SERVICE_ERR on bad options."""
    call = _Call(pamh, argv, phase)
    return pamh.PAM_SERVICE_ERR if call.error else pamh.PAM_IGNORE


def dispatch(phase: str, pamh: object, argv: list, sentinels: dict) -> int:
    """Run *phase* of pam_flux for *pamh*; return the PAM code."""
    if phase == "account":
        return acct_mgmt(pamh, argv, sentinels)
    if phase == "session":
        return open_session(pamh, argv, sentinels)
    return not_an_auth_module(pamh, argv, phase)


def end(pamh: object, sentinels: dict) -> None:
    """pam_end(): forget this handle's sentinel.

    In a Python application's interpreter, also collect reference cycles
    now, while pam_python.so is still loaded, so none holding this handle's
    objects is freed after it is gone (see _bare()).  pam_python's own
    interpreter (sshd, pamtester: started with the environment ignored and
    no command line) needs no collection: pam_python finalizes it at
    pam_end(), before it is unloaded.  A full collection costs 0.5-2 ms, a
    fifth of what this module adds to a login.
    """
    import sys

    sentinels.pop(pamh.pamh, None)
    if sys.orig_argv or not sys.flags.ignore_environment:
        import gc

        gc.collect()
