"""jsonio refuses what would break the code after it, with a JsonError (a ValueError)."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from fhir_bridge.fhir import jsonio


def test_the_depth_limit_is_100_levels():
    assert jsonio.MAX_DEPTH == 100
    assert jsonio.depth(b"[" * 100 + b"]" * 100) == 100
    assert jsonio.loads("[" * 100 + "]" * 100)
    with pytest.raises(jsonio.JsonError, match="nested more than 100"):
        jsonio.loads('{"a":' * 101 + "1" + "}" * 101)


@pytest.mark.parametrize("levels", [400, 999, 5000, 200_000])
def test_deep_nesting_is_a_json_error_not_a_recursion_error(levels):
    with pytest.raises(jsonio.JsonError):
        jsonio.loads("[" * levels + "]" * levels)


@pytest.mark.parametrize(
    "number", ["9" * 4301, "-" + "9" * 5000, "1." + "5" * 5000, "1e" + "9" * 5000]
)
def test_numbers_longer_than_4300_characters_are_refused(number):
    with pytest.raises(jsonio.JsonError, match="more than 4300"):
        jsonio.loads('{"x": ' + number + "}")


def test_brackets_inside_strings_do_not_count():
    text = b'{"a": "[[[[{{{{\\"[[[[", "b": [{"c": "]]]]"}]}'
    assert jsonio.depth(text) == 3
    assert jsonio.loads("[" + '"' + "[" * 500 + '"' + "]") == ["[" * 500]


def test_integers_beyond_64_bits_stay_exact_and_can_be_written_back():
    value = jsonio.loads('{"x": 123456789012345678901234567890, "y": 7, "z": -9223372036854775808}')
    assert value == {"x": Decimal("123456789012345678901234567890"), "y": 7, "z": -(2**63)}
    assert isinstance(value["y"], int)
    assert (
        jsonio.dumps(value)
        == b'{"x":123456789012345678901234567890,"y":7,"z":-9223372036854775808}'
    )
    assert orjson.loads(jsonio.dumps(value))["y"] == 7


@pytest.mark.parametrize(
    "text",
    [r'"a\ud800b"', r'{"k": ["x", "\udfff"]}', r'{"\ud83d": 1}', r'"\ude00\ud83d"'],
)
def test_unpaired_surrogate_escapes_are_refused(text):
    for data in (text, text.encode()):
        with pytest.raises(jsonio.JsonError, match="surrogate"):
            jsonio.loads(data)


def test_paired_surrogates_and_escaped_backslashes_are_fine():
    assert jsonio.loads(rb'["\ud83d\ude00"]') == ["\U0001f600"]
    assert jsonio.loads(rb'"\\ud800"') == "\\ud800"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_json_in_another_unicode_encoding_is_refused(encoding):
    """json.loads would take it, and the C-speed scans read UTF-8 bytes."""
    with pytest.raises(jsonio.JsonError, match="not UTF-8"):
        jsonio.loads(('{"x": ' + "9" * 5000 + "}").encode(encoding))


def test_a_utf8_byte_order_mark_is_tolerated():
    assert jsonio.loads(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}
