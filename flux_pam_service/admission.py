"""What pam_flux decides: options, the broker protocol, account and session.

pam_flux (``pam/pam_flux.py`` and flux_pam_service.pamflux, run by
``pam_python.so`` inside sshd as root) is a thin adapter around this module.
Nothing here imports PAM, Flux or
systemd: results are PAM return code *names* ("PAM_SUCCESS"), log lines are
``(syslog priority, text)`` pairs, and the broker is any object with the
methods of :class:`Broker`.

Broker protocol (the ``pam`` broker module on the local rank)
==============================================================

Both requests go to the local broker over the local connector (``FLUX_URI``,
else ``local:///run/flux/local``), nodeid FLUX_NODEID_ANY, so the module
instance of this node's rank answers.  pam_flux connects as root, which the
broker treats as a guest unless ``access.allow-root-owner`` is set; the
module must accept these requests from root and from the instance owner only
(EPERM otherwise).  Payloads are JSON objects; extra keys are ignored by
both sides.

``pam.check``: may this user log in here?  (account phase)
    request:  ``{"uid": UID}``
        UID   integer >= 0, the login user
    response: ``{"uid": UID, "admitted": BOOL, "jobs": [ID, ...], "reason": STR,
              "message": STR}``
        admitted  true iff UID has at least one job in RUN state whose R
                  includes this rank, and UID's teardown on this rank has not
                  begun.  Jobs in CLEANUP do not count.  (required)
        jobs      the IDs (integers) of those jobs; empty when not admitted
        uid, reason   echo and a human-readable why (optional; the reason
                  is logged at LOG_DEBUG)
        message   present when a user with jobs is refused because the node
                  cannot confine the login: shown to the user, whatever
                  ``action_no_jobs`` says
    errors:   EPROTO  malformed request
              EPERM   requester is neither root nor the instance owner

``pam.attach``: confirm a login scope  (session phase, DESIGN.md section 4)
    request:  ``{"uid": UID, "scope": SCOPE}``
        SCOPE  the unit name pam_flux has already started in
               ``user-UID.slice`` holding the login, e.g.
               ``flux-pam-4242.scope``
    response: ``{"attached": true}``, or ``{"attached": false, "message":
              STR}``: the node cannot confine the login; pam_flux stops
              SCOPE and refuses the session with STR
    errors:   EPERM (or ESRCH)  UID has no active job on this rank, or its
                      teardown has begun ("user UID has no active job on rank
                      R"): pam_flux stops SCOPE and refuses the session, telling
                      the user they have no active jobs here.  (EPERM is also
                      what a requester other than root or the owner gets; the
                      broker's text is logged either way.)
              EPROTO  malformed request
    Any error other than ENOSYS refuses the session; any answer other than
    ``{"attached": true}`` too.

The other side is the ``pam`` broker module (flux_pam_service/brokermod/pam.py).

ENOSYS from either request means the module is not loaded.  Then:
    account: ``job-list.list`` with
             ``{"max_entries": 1, "attrs": ["userid", "ranks", "state",
             "annotations"], "constraint": {"and": [{"userid": [UID]},
             {"ranks": ["RANK"]}, {"states": ["run"]}]}}``
             ("run" is RUN alone; job-list's "running" also matches
             CLEANUP, which must not admit); with allow-guest-user the
             owner's uid is added and max_entries is 0
    session: the marker ``LOCKDIR/uid.UID.active`` checked under the per-user
             lock (flux_pam_service.lockdir)
    A marker whose first line is ``deny: TEXT`` refuses both steps with TEXT.

``allow-guest-user`` (as Flux's C pam_flux): a user who owns no job here may
still enter as a guest when the instance owner (``security.owner``) has a RUN
job on this rank, this rank is the job's first rank, the job's
``annotations.user.uri`` (``ssh://HOST/PATH``) names a Flux sub-instance, and
``config.get`` on ``local:///PATH`` reports ``access.allow-guest-user`` true.
Guests are never placed in a slice (no session sentinel).  The guest check
always uses job-list, also when ``pam.check`` answered.

Options (``pam_python.so /usr/lib/flux-pam/pam_flux.py OPTION...``)
===================================================================

``action_no_jobs=deny|ignore`` (deny)
    user without a job here: PAM_PERM_DENIED with the denial message, or
    PAM_IGNORE so the next module decides
``action_generic_failure=deny|ignore|allow`` (deny)
    the broker cannot be reached or answers nonsense: PAM_PERM_DENIED,
    PAM_IGNORE, or PAM_SUCCESS without a slice.  Fails closed by default.
``service=NAME|*`` (sshd)
    the PAM service to act for; any other service gets PAM_IGNORE
``log_level=quiet|fatal|error|warning|notice|info|verbose|debug[2-5]`` (info)
``debug``                 same as ``log_level=debug``
``allow-guest-user``      see above
``lock-dir=DIR`` (/run/flux-pam)        absolute path
``scope-prefix=PREFIX`` (flux-pam)      login scopes are PREFIX-PID.scope
``config=PATH``           read the ``[pam]`` configuration from PATH (a file
                          or conf.d directory) instead of asking the broker
``timeout=FSD`` (10s)     bound on each broker request and D-Bus call
``pythonpath=DIR[:DIR...]``   absolute directories put in front of sys.path
                          before pam_flux imports this package or Flux's
                          cffi module ``_flux._core``
                          (pam_python starts Python with the environment
                          ignored, so PYTHONPATH has no effect)
``test-answers=FILE``     TEST ONLY.  The broker is not contacted; its
                          answers come from the JSON file FILE (see
                          pam_flux.py).  Every use is logged at LOG_WARNING.

An unknown option, a flag given a value, a value option without ``=VALUE``
or a bad value is an error naming the option: the module then fails (account
and auth: PAM_SERVICE_ERR; session: PAM_SESSION_ERR).  A later occurrence of
an option overrides an earlier one.

Interface:
    Options, OptionError(ValueError), parse_options(argv) -> Options
    service_matches(options, service) -> bool
    Decision(result, message, logs, sentinel, env)
    Verdict(kind, jobs, source, notes)      kind is OWNER, GUEST or NONE
    Broker                                  what check_account() talks to
    check_account(broker, uid, options) -> Verdict   raises OSError
    decide_account(user, uid, service, outcome, options) -> Decision | None
    decide_session_start(user, uid, service, sentinel, options)
                                            -> Decision | None (None: go on)
    decide_session(user, uid, stage, error, scope, how) -> Decision
        stage: MANAGE_OFF, CONFIG, SCOPE, REFUSED, CONFIRM or ATTACHED
    parse_check_response(obj) -> (admitted, jobs)     raise ValueError
    parse_attach_response(obj) -> None | message      raises ValueError
    parse_joblist_response(obj) -> [JobEntry]         raises ValueError
    joblist_request(uids, rank), uri_to_local(uri), broker_uri(environ)
    scope_name(prefix, pid), slice_name(uid), session_env(uid)
    denial_message(user), setup_failure_message(user)
    format_log(service, phase, text), loggable(options, priority)
"""

import errno

from .jobid import f58

# This module is on the login path: it imports neither typing, dataclasses,
# collections, re nor __future__ (annotations that name typing are strings;
# see "Import cost" in flux_pam_service.pamflux).  fsd and idset are
# imported only where needed.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

DEFAULT_URI = "local:///run/flux/local"
DEFAULT_CONFIG = None  # ask the broker (config.get)
DEFAULT_LOCK_DIR = "/run/flux-pam"
DEFAULT_SCOPE_PREFIX = "flux-pam"
DEFAULT_SERVICE = "sshd"
DEFAULT_TIMEOUT = 10.0
SYSTEMD_USER_SERVICE = "systemd-user"

# syslog priorities, numerically, so this module needs no syslog import
LOG_CRIT, LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG = 2, 3, 4, 5, 6, 7
LOG_QUIET = -1

LOG_LEVELS = {
    "quiet": LOG_QUIET,
    "fatal": LOG_CRIT,
    "error": LOG_ERR,
    "warning": LOG_WARNING,
    "notice": LOG_NOTICE,
    "info": LOG_INFO,
    "verbose": LOG_DEBUG,
    "debug": LOG_DEBUG,
    "debug2": LOG_DEBUG,
    "debug3": LOG_DEBUG,
    "debug4": LOG_DEBUG,
    "debug5": LOG_DEBUG,
}

FLUX_JOB_STATE_RUN = 16
# pam.check lists at most this many of the user's job IDs (for the log; the
# reason gives the count), so its answer does not grow with the jobs.
CHECK_MAX_JOBS = 8

_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
# systemd unit name characters (systemd.unit(5)), less "@" (templates)
_UNIT_CHARS = _ALNUM | frozenset(":_.\\-")
_SERVICE_CHARS = _ALNUM | frozenset("_.+-")

if TYPE_CHECKING:
    Log = Tuple[int, str]


class _Record:
    """An immutable record compared by value.

    Subclasses list their fields in __slots__ and defaults in _defaults.  A
    stand-in for dataclasses/NamedTuple, which cost too much to import here.
    """

    __slots__: "Tuple[str, ...]" = ()
    _defaults: "Dict[str, Any]" = {}

    def __init__(self, *args: "Any", **kwargs: "Any") -> None:
        names = self.__slots__
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__}: too many arguments")
        values = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names or key in values:
                raise TypeError(f"{type(self).__name__}: bad argument {key}")
            values[key] = value
        for name in names:
            if name not in values:
                if name not in self._defaults:
                    raise TypeError(f"{type(self).__name__}: {name} is missing")
                values[name] = self._defaults[name]
            object.__setattr__(self, name, values[name])

    def __setattr__(self, name: str, value: "Any") -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({fields})"


class OptionError(ValueError):
    """A module option is unknown or malformed; the message names it."""


class Options(_Record):
    """The parsed module arguments (see the module docstring)."""

    __slots__ = (
        "action_no_jobs",
        "action_generic_failure",
        "service",
        "log_level",
        "allow_guest_user",
        "lock_dir",
        "scope_prefix",
        "config",
        "timeout",
        "pythonpath",
        "test_answers",
    )
    _defaults = {
        "action_no_jobs": "deny",
        "action_generic_failure": "deny",
        "service": DEFAULT_SERVICE,
        "log_level": LOG_INFO,
        "allow_guest_user": False,
        "lock_dir": DEFAULT_LOCK_DIR,
        "scope_prefix": DEFAULT_SCOPE_PREFIX,
        "config": DEFAULT_CONFIG,
        "timeout": DEFAULT_TIMEOUT,
        "pythonpath": (),
        "test_answers": None,
    }


def _choice(name: str, value: str, choices: "Sequence[str]") -> str:
    if value not in choices:
        raise OptionError(
            f"option {name}={value}: value must be one of {'|'.join(choices)}"
        )
    return value


def _abspath(name: str, value: str) -> str:
    if not value.startswith("/"):
        raise OptionError(f"option {name}={value}: not an absolute path")
    return value


def _service(name: str, value: str) -> str:
    if value != "*" and not set(value) <= _SERVICE_CHARS:
        raise OptionError(f"option {name}={value}: not a PAM service name or *")
    return value


def _log_level(name: str, value: str) -> int:
    try:
        return LOG_LEVELS[value]
    except KeyError:
        raise OptionError(
            f"option {name}={value}: value must be one of {'|'.join(LOG_LEVELS)}"
        ) from None


def _scope_prefix(name: str, value: str) -> str:
    if not set(value) <= _UNIT_CHARS or len(value) > 200:
        raise OptionError(
            f"option {name}={value}: not usable in a systemd unit name"
            " (letters, digits, ':', '_', '.', '-', '\\')"
        )
    return value


def _timeout(name: str, value: str) -> float:
    from . import fsd

    try:
        seconds = fsd.parse(value)
    except ValueError as exc:
        raise OptionError(f"option {name}={value}: {exc}") from None
    if seconds <= 0:
        raise OptionError(f"option {name}={value}: must be greater than zero")
    return seconds


def _pythonpath(name: str, value: str) -> "Tuple[str, ...]":
    dirs = tuple(value.split(":"))
    for d in dirs:
        if not d.startswith("/"):
            raise OptionError(f"option {name}={value}: {d!r} is not an absolute path")
    return dirs


_VALUE_OPTIONS = {
    "action_no_jobs": (
        "action_no_jobs",
        lambda n, v: _choice(n, v, ("deny", "ignore")),
    ),
    "action_generic_failure": (
        "action_generic_failure",
        lambda n, v: _choice(n, v, ("deny", "ignore", "allow")),
    ),
    "service": ("service", _service),
    "log_level": ("log_level", _log_level),
    "lock-dir": ("lock_dir", _abspath),
    "scope-prefix": ("scope_prefix", _scope_prefix),
    "config": ("config", _abspath),
    "timeout": ("timeout", _timeout),
    "pythonpath": ("pythonpath", _pythonpath),
    "test-answers": ("test_answers", _abspath),
}
_FLAG_OPTIONS = {
    "debug": ("log_level", LOG_DEBUG),
    "allow-guest-user": ("allow_guest_user", True),
}


def parse_options(argv: "Sequence[str]") -> "Options":
    """Parse module arguments (without the module path pam_python passes first).

    Raises OptionError naming the first bad option.
    """
    values: Dict[str, Any] = {}
    for arg in argv:
        name, eq, value = arg.partition("=")
        if name in _FLAG_OPTIONS:
            if eq:
                raise OptionError(f"option {arg}: {name} takes no value")
            field_name, flag_value = _FLAG_OPTIONS[name]
            values[field_name] = flag_value
        elif name in _VALUE_OPTIONS:
            if not eq or not value:
                raise OptionError(f"option {arg}: {name} needs {name}=VALUE")
            field_name, convert = _VALUE_OPTIONS[name]
            values[field_name] = convert(name, value)
        else:
            raise OptionError(f"unrecognized option: {arg}")
    return Options(**values)


def service_matches(options: "Options", service: "Optional[str]") -> bool:
    """Return True if pam_flux acts for PAM service *service*."""
    return options.service == "*" or service == options.service


# ---------------------------------------------------------------------------
# Broker answers


class Broker:
    """What check_account() needs from a connection to a Flux instance.

    pam_flux provides one backed by the Flux Python bindings (and, for tests
    only, one backed by a JSON file).  Every method raises OSError(errno,
    text) on failure; ENOSYS from rpc() means no such service.
    """

    def rpc(self, topic: str, payload: "Mapping[str, Any]") -> "Any":
        """Send a request to the local rank and return the decoded response."""
        raise NotImplementedError

    def attr_get(self, name: str) -> str:
        """Return the broker attribute *name*."""
        raise NotImplementedError

    def open_instance(self, uri: str) -> "Broker":
        """Connect to another instance (a sub-instance, for the guest check)."""
        raise NotImplementedError

    def close(self) -> None:
        """Drop the connection."""


def _is_uint(value: "Any") -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse_check_response(obj: "Any") -> "Tuple[bool, Tuple[int, ...]]":
    """Validate a ``pam.check`` response; return (admitted, job IDs)."""
    if not isinstance(obj, dict):
        raise ValueError("pam.check response is not a JSON object")
    admitted = obj.get("admitted")
    if not isinstance(admitted, bool):
        raise ValueError("pam.check response: admitted is missing or not a boolean")
    jobs = obj.get("jobs", [])
    if not isinstance(jobs, list) or not all(_is_uint(j) for j in jobs):
        raise ValueError("pam.check response: jobs is not an array of job IDs")
    if "njobs" in obj and not _is_uint(obj["njobs"]):
        raise ValueError("pam.check response: njobs is not a count")
    return admitted, tuple(jobs)


def parse_attach_response(obj: "Any") -> "Optional[str]":
    """Validate a ``pam.attach`` response: None if attached, the message of
    ``{"attached": false, "message": M}``; anything else raises ValueError."""
    if isinstance(obj, dict) and obj.get("attached") is True:
        return None
    if isinstance(obj, dict) and obj.get("attached") is False:
        message = obj.get("message")
        if isinstance(message, str) and message:
            return message
    raise ValueError('pam.attach response is not {"attached": true}')


def joblist_request(
    uids: "Sequence[int]", rank: int, max_entries: int = 0
) -> "Dict[str, Any]":
    """Return the ``job-list.list`` payload for RUN jobs of *uids* on *rank*.

    *max_entries* 0 means all; one job is enough to admit a job owner.
    """
    return {
        "max_entries": max_entries,
        "attrs": ["userid", "ranks", "state", "annotations"],
        "constraint": {
            "and": [
                {"userid": list(uids)},
                {"ranks": [str(rank)]},
                {"states": ["run"]},
            ]
        },
    }


class JobEntry(_Record):
    """One job from a job-list answer: id, userid, ranks (frozenset), uri."""

    __slots__ = ("id", "userid", "ranks", "uri")


def parse_joblist_response(obj: "Any") -> "List[JobEntry]":
    """Validate a ``job-list.list`` response; return its RUN jobs.

    Entries in another state are dropped (the constraint asks for RUN only;
    this guards against a broker that ignores part of it).
    """
    if not isinstance(obj, dict) or not isinstance(obj.get("jobs"), list):
        raise ValueError("job-list.list response has no jobs array")
    from . import idset

    entries = []
    for job in obj["jobs"]:
        if not isinstance(job, dict):
            raise ValueError("job-list.list response: a job is not an object")
        jobid, userid, ranks = job.get("id"), job.get("userid"), job.get("ranks")
        if not _is_uint(jobid) or not _is_uint(userid):
            raise ValueError("job-list.list response: a job lacks id or userid")
        if not isinstance(ranks, str):
            raise ValueError(f"job-list.list response: job {jobid} has no ranks")
        if job.get("state", FLUX_JOB_STATE_RUN) != FLUX_JOB_STATE_RUN:
            continue
        uri = None
        annotations = job.get("annotations")
        if isinstance(annotations, dict) and isinstance(annotations.get("user"), dict):
            value = annotations["user"].get("uri")
            uri = value if isinstance(value, str) else None
        entries.append(JobEntry(jobid, userid, idset.decode(ranks), uri))
    return entries


def uri_to_local(uri: str) -> "Optional[str]":
    """Turn a job's ``ssh://HOST/PATH`` URI into ``local:///PATH``, else None."""
    if not uri.startswith("ssh://"):
        return None
    slash = uri.find("/", len("ssh://"))
    if slash < 0 or slash == len(uri) - 1:
        return None
    return "local://" + uri[slash:]


def broker_uri(environ: "Mapping[str, str]") -> str:
    """The local broker: ``FLUX_URI`` if set, else the system instance's."""
    return environ.get("FLUX_URI") or DEFAULT_URI


# ---------------------------------------------------------------------------
# Account


OWNER = "owner"
GUEST = "guest"
NONE = "none"


class Verdict(_Record):
    """What the broker says about a user.

    kind    OWNER, GUEST or NONE
    jobs    the job IDs that admit (OWNER), or the guest's job (GUEST)
    source  "pam.check" or "job-list"
    notes   (priority, text) lines to log
    manage  the module's pam.manage-user-slice, as pam.check answered it;
            None when it did not (job-list): the session reads the config
    message with kind NONE: the user has jobs but the node cannot take the
            login (pam.check's message, or the marker's deny line)
    """

    __slots__ = ("kind", "jobs", "source", "notes", "manage", "message")
    _defaults = {
        "jobs": (),
        "source": "pam.check",
        "notes": (),
        "manage": None,
        "message": None,
    }


def _guest_allowed(broker: "Broker", job: "JobEntry", notes: "List[Log]") -> bool:
    local = uri_to_local(job.uri) if job.uri else None
    if local is None:
        notes.append((LOG_ERR, f"job {f58(job.id)}: cannot use instance URI {job.uri}"))
        return False
    try:
        sub = broker.open_instance(local)
        try:
            conf = sub.rpc("config.get", {})
        finally:
            sub.close()
    except OSError as exc:
        notes.append((LOG_ERR, f"job {f58(job.id)}: config.get on {local}: {exc}"))
        return False
    access = conf.get("access") if isinstance(conf, dict) else None
    allowed = isinstance(access, dict) and access.get("allow-guest-user") is True
    if not allowed:
        notes.append(
            (LOG_INFO, f"job {f58(job.id)}: access.allow-guest-user not enabled")
        )
    return allowed


def check_account(broker: "Broker", uid: int, options: "Options") -> "Verdict":
    """Ask the broker whether *uid* may log in on this node.

    Raises OSError when the broker cannot be asked or answers nonsense
    (EPROTO); the caller applies ``action_generic_failure``.
    """
    notes: List[Log] = []
    ask_joblist_for_owner = False
    try:
        response = broker.rpc("pam.check", {"uid": uid, "max_jobs": CHECK_MAX_JOBS})
        admitted, jobs = parse_check_response(response)
        if isinstance(response.get("reason"), str):
            notes.append((LOG_DEBUG, f"pam.check: {response['reason']}"))
        if admitted:
            manage = response.get("manage_user_slice")
            if not isinstance(manage, bool):
                manage = None
            return Verdict(OWNER, jobs, "pam.check", tuple(notes), manage)
        message = response.get("message")
        if isinstance(message, str) and message:
            return Verdict(NONE, (), "pam.check", tuple(notes), message=message)
        if not options.allow_guest_user:
            return Verdict(NONE, (), "pam.check", tuple(notes))
        source = "pam.check"
    except ValueError as exc:
        raise OSError(errno.EPROTO, str(exc)) from None
    except OSError as exc:
        if exc.errno != errno.ENOSYS:
            raise
        notes.append((LOG_DEBUG, "pam module not loaded: asking job-list"))
        ask_joblist_for_owner = True
        source = "job-list"
    rank = _uint_attr(broker, "rank")
    uids = [uid] if ask_joblist_for_owner else []
    owner = None
    if options.allow_guest_user:
        try:
            owner = _uint_attr(broker, "security.owner")
        except OSError as exc:
            notes.append((LOG_ERR, f"cannot get security.owner for guests: {exc}"))
        if owner is not None and owner != uid:
            uids.append(owner)
        else:
            owner = None
    if not uids:
        return Verdict(NONE, (), source, tuple(notes))
    try:
        entries = parse_joblist_response(
            broker.rpc(
                "job-list.list",
                joblist_request(uids, rank, max_entries=0 if owner else 1),
            )
        )
    except ValueError as exc:
        raise OSError(errno.EPROTO, str(exc)) from None
    own = tuple(e.id for e in entries if e.userid == uid and rank in e.ranks)
    if ask_joblist_for_owner and own:
        return Verdict(OWNER, own, "job-list", tuple(notes))
    for job in entries:
        if owner is None or job.userid != owner or rank not in job.ranks:
            continue
        if rank != min(job.ranks):
            notes.append((LOG_DEBUG, f"job {f58(job.id)}: this rank is not its first"))
            continue
        if _guest_allowed(broker, job, notes):
            return Verdict(GUEST, (job.id,), "job-list", tuple(notes))
    return Verdict(NONE, (), source, tuple(notes))


def _uint_attr(broker: "Broker", name: str) -> int:
    value = broker.attr_get(name)
    try:
        number = int(value)
        if number < 0:
            raise ValueError
    except (TypeError, ValueError):
        raise OSError(
            errno.EPROTO, f"broker attribute {name}={value!r} is not an integer"
        ) from None
    return number


class Decision(_Record):
    """What pam_flux does.

    result    the PAM return code's name, e.g. "PAM_PERM_DENIED"
    message   text for the user (PAM_ERROR_MSG), or None
    logs      (priority, text) lines to log
    sentinel  True: admitted as a job owner, the session may act
    env       (name, value) pairs to put in the PAM environment
    """

    __slots__ = ("result", "message", "logs", "sentinel", "env")
    _defaults = {"message": None, "logs": (), "sentinel": False, "env": ()}


def denial_message(user: str) -> str:
    """The text a refused user sees (same wording as Flux's C pam_flux)."""
    return f"Access denied: user {user} has no active jobs on this node"


def setup_failure_message(user: str) -> str:
    """The text a user sees when a session cannot be set up."""
    return f"Access denied: cannot set up a session for user {user} on this node"


def decide_account(
    user: "Optional[str]",
    uid: "Optional[int]",
    service: "Optional[str]",
    outcome: "Verdict | OSError | None",
    options: "Options",
) -> "Optional[Decision]":
    """Map the account-phase facts to a Decision.

    *uid* is None when *user* is not in the password database.  *outcome* is
    check_account()'s Verdict, the OSError it raised, or None when the broker
    has not been asked; the result is then None if it must be asked.
    """
    if not service_matches(options, service):
        return Decision(
            "PAM_IGNORE",
            logs=((LOG_DEBUG, f"service {service} is not {options.service}"),),
        )
    if not user:
        return Decision("PAM_USER_UNKNOWN", logs=((LOG_ERR, "PAM_USER is not set"),))
    if uid is None:
        return Decision(
            "PAM_USER_UNKNOWN", logs=((LOG_ERR, f"user {user} does not exist"),)
        )
    who = f"user {user} (uid={uid})"
    if uid == 0:
        return Decision(
            "PAM_SUCCESS", logs=((LOG_DEBUG, f"access granted for {who}: root"),)
        )
    if outcome is None:
        return None
    if isinstance(outcome, BaseException):
        logs: Tuple[Log, ...] = (
            (LOG_ERR, f"cannot check jobs of {who}: {_errtext(outcome)}"),
        )
        action = options.action_generic_failure
        if action == "allow":
            return Decision(
                "PAM_SUCCESS",
                logs=logs
                + ((LOG_WARNING, f"access granted for {who} without a job check"),),
            )
        if action == "ignore":
            return Decision("PAM_IGNORE", logs=logs)
        return Decision(
            "PAM_PERM_DENIED",
            denial_message(user),
            logs + ((LOG_INFO, f"access denied for {who}"),),
        )
    notes = outcome.notes
    if outcome.kind == OWNER:
        jobs = ",".join(f58(j) for j in outcome.jobs)
        return Decision(
            "PAM_SUCCESS",
            logs=notes
            + (
                (
                    LOG_DEBUG,
                    f"access granted for {who}: jobs {jobs} ({outcome.source})",
                ),
            ),
            sentinel=True,
        )
    if outcome.kind == GUEST:
        return Decision(
            "PAM_SUCCESS",
            logs=notes
            + (
                (
                    LOG_INFO,
                    f"access granted for {who} as guest of job {f58(outcome.jobs[0])}",
                ),
            ),
        )
    if outcome.message:
        return Decision(
            "PAM_PERM_DENIED",
            outcome.message,
            notes + ((LOG_INFO, f"access denied for {who}: {outcome.message}"),),
        )
    if options.action_no_jobs == "ignore":
        return Decision(
            "PAM_IGNORE",
            logs=notes + ((LOG_INFO, f"{who} has no active jobs on this node"),),
        )
    return Decision(
        "PAM_PERM_DENIED",
        denial_message(user),
        notes + ((LOG_INFO, f"access denied for {who}: no active jobs on this node"),),
    )


def _errtext(exc: "BaseException") -> str:
    if isinstance(exc, OSError) and exc.strerror:
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return f"{exc.strerror} ({name})"
    return str(exc) or type(exc).__name__


# ---------------------------------------------------------------------------
# Session


def scope_name(prefix: str, pid: int) -> str:
    """The login scope unit: PREFIX-PID.scope."""
    return f"{prefix}-{pid}.scope"


def slice_name(uid: int) -> str:
    """The user's slice unit."""
    return f"user-{uid}.slice"


def session_env(uid: int) -> "Tuple[Tuple[str, str], ...]":
    """The variables a confined login gets (user@UID.service runs its bus)."""
    return (
        ("XDG_RUNTIME_DIR", f"/run/user/{uid}"),
        ("DBUS_SESSION_BUS_ADDRESS", f"unix:path=/run/user/{uid}/bus"),
    )


def decide_session_start(
    user: "Optional[str]",
    uid: "Optional[int]",
    service: "Optional[str]",
    sentinel: "Optional[Tuple[str, int, Optional[bool]]]",
    options: "Options",
) -> "Optional[Decision]":
    """Decide whether open_session acts at all; None means go on.

    *sentinel* is the (user, uid, manage) the account phase of this PAM
    handle admitted as a job owner (manage: Verdict.manage), or None.
    """
    if service == SYSTEMD_USER_SERVICE:
        return Decision(
            "PAM_IGNORE", logs=((LOG_DEBUG, "systemd-user service: not acting"),)
        )
    if not service_matches(options, service):
        return Decision(
            "PAM_IGNORE",
            logs=((LOG_DEBUG, f"service {service} is not {options.service}"),),
        )
    if sentinel is None:
        return Decision(
            "PAM_IGNORE",
            logs=(
                (LOG_DEBUG, "no session setup: not admitted by pam_flux as job owner"),
            ),
        )
    if (user, uid) != tuple(sentinel[:2]):
        return Decision(
            "PAM_SESSION_ERR",
            setup_failure_message(user or "?"),
            ((LOG_ERR, f"user {user} is not the user {sentinel[0]} admitted"),),
        )
    return None


# session stages, for decide_session()
MANAGE_OFF = "manage-off"
CONFIG = "config"
LOCKDIR = "lock-dir"
SCOPE = "scope"
REFUSED = "refused"
DENIED = "denied"
CONFIRM = "confirm"
ATTACHED = "attached"


def decide_session(
    user: str,
    uid: int,
    stage: str,
    error: "Optional[BaseException]" = None,
    scope: "Optional[str]" = None,
    how: str = "",
) -> "Decision":
    """Map the outcome of a session stage to a Decision.

    *stage*: MANAGE_OFF (pam.manage-user-slice false: success, no scope),
    CONFIG (the configuration cannot be read), LOCKDIR (the lock directory
    is unsafe: group- or other-writable, not root's), SCOPE (the scope cannot be
    created), REFUSED (the user is no longer active: pam.attach refused or
    the marker is absent), DENIED (the node cannot confine the login:
    *error*'s text is the message shown), CONFIRM (confirmation failed
    otherwise) or ATTACHED (success; *how* says which confirmation was used).
    """
    who = f"user {user} (uid={uid})"
    if stage == MANAGE_OFF:
        return Decision(
            "PAM_SUCCESS",
            logs=((LOG_DEBUG, "pam.manage-user-slice is false: no scope"),),
        )
    if stage == ATTACHED:
        return Decision(
            "PAM_SUCCESS",
            logs=((LOG_DEBUG, f"attached {who} to {scope} ({how})"),),
            env=session_env(uid),
        )
    if stage == REFUSED:
        return Decision(
            "PAM_SESSION_ERR",
            denial_message(user),
            (
                (
                    LOG_INFO,
                    f"session refused for {who}: no longer active ({how}: "
                    f"{_errtext(error) if error else 'no marker'})",
                ),
            ),
        )
    if stage == DENIED:
        message = str(error.args[-1]) if error is not None else "Access denied"
        return Decision(
            "PAM_SESSION_ERR",
            message,
            ((LOG_INFO, f"session refused for {who} ({how}): {message}"),),
        )
    what = {
        CONFIG: "cannot read the configuration",
        LOCKDIR: "unsafe lock directory",
        SCOPE: f"cannot create {scope}",
        CONFIRM: f"cannot confirm {scope}",
    }.get(stage, stage)
    detail = f": {_errtext(error)}" if error else ""
    return Decision(
        "PAM_SESSION_ERR",
        setup_failure_message(user),
        ((LOG_ERR, f"session refused for {who}: {what}{detail}"),),
    )


def format_log(service: "Optional[str]", phase: str, text: str) -> str:
    """Prefix a log line the way pam_syslog does: pam_flux(SERVICE:PHASE)."""
    return f"pam_flux({service or '?'}:{phase}): {text}"


def loggable(options: "Options", priority: int) -> bool:
    """Return True if a line at *priority* passes ``log_level``."""
    return priority <= options.log_level
