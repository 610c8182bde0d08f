"""The pam_flux lines of the documentation's PAM stacks, through pam_flux.so:
their options are accepted (root is admitted without asking a broker)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "unit"))

import docexamples  # noqa: E402

LINES = [
    pytest.param(line, id=f"{doc}:{n}")
    for doc, n, kind, text in docexamples.examples()
    if kind == "pam-stack"
    for line in text.splitlines()
    if "pam_flux.so" in line.split()
]


def test_the_docs_have_pam_flux_lines():
    assert len(LINES) >= 4


@pytest.mark.parametrize("line", LINES)
def test_doc_pam_flux_line_options_are_accepted(rig, line):
    words = line.split()
    options = words[words.index("pam_flux.so") + 1 :]
    rig.stack(raw_options=options, service="sshd")
    rig.expect("root", [("account", "PAM_SUCCESS"), ("authenticate", "IGNORED")])
