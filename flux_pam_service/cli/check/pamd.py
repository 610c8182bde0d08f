"""Read a PAM service file the way Linux-PAM does, includes expanded.

Syntax handled (pam.d(5)):
    ``type control module [args...]``  one rule; ``type`` may carry a leading
                                       ``-`` (skip silently if the module is
                                       missing); ``control`` is a keyword or a
                                       ``[value=action ...]`` bracket
    ``type include|substack FILE``     the rules of that type from FILE
    ``@include FILE``                  every rule of FILE (Debian)
    ``#`` comments, backslash line continuation, ``[`` ``]`` arguments.

Relative FILE names are looked up in the directory of the including file;
absolute ones below *root* (so a tree that is not the live system can be
read).
"""

import operator
import os
import shlex
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Set, Tuple

TYPES = ("account", "auth", "password", "session")


@dataclass(frozen=True)
class Rule:
    """One expanded PAM rule."""

    type: str
    control: str
    module: str
    args: Tuple[str, ...] = field(default_factory=tuple)
    path: str = ""
    lineno: int = 0

    @property
    def name(self) -> str:
        """Module file name without its directory."""
        return os.path.basename(self.module)

    @property
    def where(self) -> str:
        """``path:lineno`` of the line this rule came from."""
        return f"{self.path}:{self.lineno}"


def _logical_lines(text: str) -> List[Tuple[int, str]]:
    """Join continuation lines, strip comments; keep the first line number."""
    out: List[Tuple[int, str]] = []
    buf = ""
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].rstrip()
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            out.append((start, buf.strip()))
        buf = ""
    if buf.strip():
        out.append((start, buf.strip()))
    return out


def _split(line: str) -> List[str]:
    """Split on blanks, keeping ``[...]`` groups (controls, args) whole."""
    tokens: List[str] = []
    i = 0
    while i < len(line):
        if line[i].isspace():
            i += 1
            continue
        if line[i] == "[":
            end = line.find("]", i)
            end = len(line) - 1 if end < 0 else end
            tokens.append(line[i : end + 1])
            i = end + 1
            continue
        j = i
        while j < len(line) and not line[j].isspace():
            j += 1
        tokens.append(line[i:j])
        i = j
    return tokens


def _resolve(name: str, including: str, root: str) -> str:
    if os.path.isabs(name):
        return os.path.join(root, name.lstrip("/"))
    return os.path.join(os.path.dirname(including), name)


def read(path: str, root: str = "/") -> Tuple[List[Rule], List[str]]:
    """Return the rules of the service file *path*, includes expanded."""
    rules: List[Rule] = []
    problems: List[str] = []
    _read(path, root, None, [], rules, problems)
    return rules, problems


def _read(
    path: str,
    root: str,
    only: Optional[str],
    stack: List[str],
    rules: List[Rule],
    problems: List[str],
) -> None:
    real = os.path.realpath(path)
    if real in stack:
        problems.append(f"{path}: include loop")
        return
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as exc:
        problems.append(f"{path}: cannot read: {exc.strerror}")
        return
    for lineno, line in _logical_lines(text):
        tokens = _split(line)
        if tokens[0] == "@include":
            if len(tokens) != 2:
                problems.append(f"{path}:{lineno}: malformed @include")
                continue
            target = _resolve(tokens[1], path, root)
            _read(target, root, only, stack + [real], rules, problems)
            continue
        if len(tokens) < 3:
            problems.append(f"{path}:{lineno}: malformed rule: {line}")
            continue
        rtype = tokens[0].lstrip("-").lower()
        if rtype not in TYPES:
            problems.append(f"{path}:{lineno}: unknown type {tokens[0]!r}")
            continue
        if only is not None and rtype != only:
            continue
        control = tokens[1]
        if control in ("include", "substack"):
            target = _resolve(tokens[2], path, root)
            _read(target, root, rtype, stack + [real], rules, problems)
            continue
        rules.append(
            Rule(
                type=rtype,
                control=control,
                module=tokens[2],
                args=tuple(tokens[3:]),
                path=path,
                lineno=lineno,
            )
        )


def format_rule(rule: Rule) -> str:
    """The rule as a pam.d line."""
    return " ".join(
        [rule.type, rule.control, rule.module, *map(shlex.quote, rule.args)]
    )


# Linux-PAM's control keywords as [value=action] tables (pam.d(5)).
_KEYWORDS = {
    "required": {
        "success": "ok",
        "new_authtok_reqd": "ok",
        "ignore": "ignore",
        "default": "bad",
    },
    "requisite": {
        "success": "ok",
        "new_authtok_reqd": "ok",
        "ignore": "ignore",
        "default": "die",
    },
    "sufficient": {"success": "done", "new_authtok_reqd": "done", "default": "ignore"},
    "optional": {"success": "ok", "new_authtok_reqd": "ok", "default": "ignore"},
}
# what a module returns when its outcome is a failure: pam_succeed_if's
# false condition is PAM_AUTH_ERR; anything else may return any error
_FAILURE = {"pam_succeed_if.so": "auth_err"}


def _actions(control: str) -> Dict[str, str]:
    if control in _KEYWORDS:
        return _KEYWORDS[control]
    table: Dict[str, str] = {}
    for item in control.strip("[]").split():
        value, _, action = item.partition("=")
        table[value.lower()] = action.lower()
    return table


def _next(i: int, action: str) -> Optional[int]:
    """Index of the rule run after rule *i* takes *action*; None: the end."""
    if action in ("done", "die"):
        return None
    if action.isdigit():
        return i + 1 + int(action)
    return i + 1  # ignore, ok, bad, reset


def reachable(rules: List[Rule], decide: Callable[[Rule], Optional[bool]]) -> Set[int]:
    """Indices of *rules* (one type, in order) that Linux-PAM may run.

    Each rule's control is followed for every outcome its module may have;
    decide(rule) is True or False when the module's outcome (success or
    failure) is known, None when it may be either.
    """
    seen: Set[int] = set()
    todo = [0]
    while todo:
        i = todo.pop()
        if i in seen or i >= len(rules):
            continue
        seen.add(i)
        rule = rules[i]
        table = _actions(rule.control)
        outcome = decide(rule)
        values = []
        if outcome is not False:
            values.append("success")
        if outcome is not True:
            values.append(_FAILURE.get(rule.name, "default"))
            if outcome is None:
                values.append("ignore")
        for value in values:
            action = table.get(value, table.get("default", "ignore"))
            nxt = _next(i, action)
            if nxt is not None:
                todo.append(nxt)
    return seen


_FLAGS = {"debug", "use_uid", "quiet", "quiet_fail", "quiet_success", "audit"}


# ``uid OP N`` for a job user, whose uid is at least uid_min: OP -> (when
# the outcome is certain, as a test of (N, uid_min); the outcome)
_UID_OPS = {
    "eq": (operator.lt, False),  # N < uid_min: never equal
    "ne": (operator.lt, True),
    "lt": (operator.le, False),  # N <= uid_min: never below
    "le": (operator.lt, False),
    "gt": (operator.lt, True),
    "ge": (operator.le, True),
}
_SYMBOLS = {"=": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}
_UID_OPS.update({sym: _UID_OPS[name] for sym, name in _SYMBOLS.items()})


def _condition(field_: str, op: str, value: str, uid_min: int) -> Optional[bool]:
    """One pam_succeed_if condition for a job user (see job_user_outcome)."""
    if field_ == "uid" and value.isdigit() and op in _UID_OPS:
        certain, outcome = _UID_OPS[op]
        return outcome if certain(int(value), uid_min) else None
    if field_ == "user":
        if op in ("=", "eq") and value == "root":
            return False
        if op in ("!=", "ne") and value == "root":
            return True
        if op == "ingroup":
            return False
        if op == "notingroup":
            return True
    return None


def job_user_outcome(rule: Rule, uid_min: int = 1000) -> Optional[bool]:
    """The outcome of a ``pam_succeed_if.so`` rule for a job user.

    A job user has a uid of at least *uid_min*, is not root and is in none
    of the groups the rule names; None for any other module or condition.
    """
    if rule.name != "pam_succeed_if.so":
        return None
    args = [a for a in rule.args if a not in _FLAGS]
    if "use_uid" in rule.args or not args or len(args) % 3:
        return None  # use_uid tests sshd's own uid (root), not the user
    result: Optional[bool] = True
    for k in range(0, len(args), 3):
        value = _condition(args[k], args[k + 1], args[k + 2], uid_min)
        if value is False:
            return False
        if value is None:
            result = None
    return result
