"""flux_pam_service.jsonwire: JSON through _json, checked against json."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flux_pam_service import jsonwire

SRCDIR = Path(__file__).resolve().parents[2]

# Strings that stress escaping: quotes, backslashes, control characters,
# the JSON-special U+2028/U+2029, non-BMP characters.
tricky_text = st.text(alphabet='"\\/\x00\x01\x08\x0c\x1f\x7f\n\r\t é€😀\u2028\u2029')
texts = st.one_of(st.text(), tricky_text)
ints = st.one_of(st.integers(), st.integers(min_value=-(10**60), max_value=10**60))
scalars = st.one_of(st.none(), st.booleans(), ints, texts)
trees = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(texts, children, max_size=5),
    ),
    max_leaves=20,
)
containers = st.one_of(
    st.lists(trees, min_size=1, max_size=5),
    st.dictionaries(texts, trees, min_size=1, max_size=5),
)
json_space = st.text(alphabet=" \t\n\r", max_size=4)


@given(trees)
def test_dumps_then_loads_gives_the_value_back(value):
    assert jsonwire.loads(jsonwire.dumps(value)) == value


@given(trees)
def test_json_reads_what_dumps_writes(value):
    assert json.loads(jsonwire.dumps(value)) == value


@given(trees)
def test_loads_reads_what_json_writes(value):
    assert jsonwire.loads(json.dumps(value)) == value
    assert jsonwire.loads(json.dumps(value, ensure_ascii=False, indent=2)) == value


@given(trees)
def test_dumps_is_compact_ascii_json(value):
    text = jsonwire.dumps(value)
    assert text.isascii()
    assert text == json.dumps(value, separators=(",", ":"))


def test_dumps_writes_tuples_as_arrays():
    assert jsonwire.loads(jsonwire.dumps({"a": (1, "b", None)})) == {
        "a": [1, "b", None]
    }


@given(trees, json_space, json_space)
def test_loads_accepts_json_white_space_around_the_value(value, before, after):
    assert jsonwire.loads(before + jsonwire.dumps(value) + after) == value


@pytest.mark.parametrize("space", ["\f", "\v", "\u00a0", "\ufeff", "\u2028"])
def test_loads_refuses_white_space_that_json_does_not_allow(space):
    with pytest.raises(ValueError):
        jsonwire.loads(space + "1")
    with pytest.raises(ValueError):
        jsonwire.loads("1" + space)


@pytest.mark.parametrize(
    "text",
    ["NaN", "Infinity", "-Infinity", "[NaN]", '{"a": Infinity}', "[1, -Infinity]"],
)
def test_loads_refuses_nan_and_infinity(text):
    with pytest.raises(ValueError, match="not valid JSON"):
        jsonwire.loads(text)


@pytest.mark.parametrize(
    "text", ["1 x", "{} {}", "[1]]", "null,", '"a" "b"', "true false", "{}\0"]
)
def test_loads_refuses_trailing_garbage(text):
    with pytest.raises(ValueError):
        jsonwire.loads(text)


@pytest.mark.parametrize("text", ["", " ", "\n\t\r "])
def test_loads_refuses_empty_text(text):
    with pytest.raises(ValueError):
        jsonwire.loads(text)


@given(containers, st.data())
def test_loads_refuses_truncated_text(value, data):
    text = jsonwire.dumps(value)
    cut = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    with pytest.raises(ValueError):
        jsonwire.loads(text[:cut])


@pytest.mark.parametrize(
    "text",
    ['"a\nb"', '"a\x00"', "[1 2]", '{"a" 1}', '"abc', '"\\q"', "{1: 2}", "[1,]", "tru"],
)
def test_loads_refuses_syntax_errors(text):
    with pytest.raises(ValueError):
        jsonwire.loads(text)


def test_loads_raises_value_error_in_an_interpreter_without_json():
    """pam_flux's interpreter has not imported json: _json cannot find
    json.decoder.JSONDecodeError there, and must not fail otherwise."""
    script = """
import sys
from flux_pam_service import jsonwire
assert "json" not in sys.modules, "json already imported"
bad = ['"a\\nb"', '[1 2]', '{"a" 1}', '"abc', '"\\\\q"', '{1: 2}', "", "1 x", "NaN"]
for text in bad:
    try:
        jsonwire.loads(text)
    except ValueError:
        continue
    except Exception as exc:
        sys.exit(f"{text!r}: {type(exc).__name__}: {exc}")
    sys.exit(f"{text!r}: accepted")
print(jsonwire.loads('{"ok": [1, "x"]}'))
"""
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(SRCDIR)!r})\n{script}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "{'ok': [1, 'x']}\n"


@pytest.mark.parametrize(
    "value",
    [{1: "a"}, {None: 1}, {(1, 2): 1}, {"ok": {2: 3}}, [{b"k": 1}]],
    ids=["int", "none", "tuple", "nested", "bytes"],
)
def test_dumps_refuses_keys_that_are_not_strings(value):
    with pytest.raises(TypeError, match="not a string"):
        jsonwire.dumps(value)


@pytest.mark.parametrize(
    "value",
    [
        1.5,
        float("nan"),
        [0.0],
        {"a": 1e300},
        {1, 2},
        {"a": frozenset()},
        b"x",
        object(),
    ],
    ids=[
        "float",
        "nan",
        "float-in-list",
        "float-in-dict",
        "set",
        "frozenset",
        "bytes",
        "object",
    ],
)
def test_dumps_refuses_floats_sets_and_other_objects(value):
    with pytest.raises(TypeError):
        jsonwire.dumps(value)
