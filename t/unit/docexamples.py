"""Find the examples in doc/*.rst.

An example is the literal block (``::`` or ``.. code-block::``) that follows
a comment line ``.. example: KIND``.  The tests run each KIND through the
code that consumes such text.
"""

import glob
import os
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = sorted(glob.glob(os.path.join(REPO, "doc", "**", "*.rst"), recursive=True))


def _block(lines, i):
    """The literal block starting after line i-1; (text, next index)."""
    n = len(lines)
    while i < n and not lines[i].strip():
        i += 1
    if i < n and lines[i].startswith(".. code-block::"):
        i += 1
        while i < n and lines[i].strip().startswith(":"):
            i += 1
    elif i < n and lines[i].strip() == "::":
        i += 1
    else:
        raise ValueError(f"line {i + 1}: no literal block after the example marker")
    body = []
    while i < n and (not lines[i].strip() or lines[i].startswith(" ")):
        body.append(lines[i])
        i += 1
    return textwrap.dedent("\n".join(body)).strip() + "\n", i


def examples(path=None):
    """[(doc path, line, kind, text)] for one doc or all of them."""
    out = []
    for doc in [path] if path else DOCS:
        with open(doc) as f:
            lines = f.read().splitlines()
        for i, line in enumerate(lines):
            if line.startswith(".. example: "):
                kind = line.split(":", 1)[1].strip()
                text, _ = _block(lines, i + 1)
                out.append((os.path.relpath(doc, REPO), i + 1, kind, text))
    return out
