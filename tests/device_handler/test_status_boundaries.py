"""statusDetails at AWS's limits, with generated maps that actually reach them."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from device_handler.status import MAX_KEYS, MAX_VALUE, details

valid_keys = st.from_regex(r"[a-zA-Z0-9:_-]{1,128}", fullmatch=True)
invalid_keys = st.sampled_from(["", "a b", "é", "x" * 129, "key/slash", "dot.key"])
values = st.text(alphabet=st.characters(codec="ascii", categories=["L", "N"]), min_size=1)


@given(st.dictionaries(valid_keys, values, min_size=MAX_KEYS + 1, max_size=40))
def test_more_than_ten_valid_pairs_are_cut_to_the_first_ten(pairs: dict[str, str]) -> None:
    out = details(pairs)
    assert len(out) == MAX_KEYS
    assert list(out) == list(pairs)[:MAX_KEYS]
    assert all(out[k] == pairs[k].strip() for k in out)


@given(st.dictionaries(valid_keys, values, min_size=0, max_size=MAX_KEYS))
def test_up_to_ten_valid_pairs_are_all_kept(pairs: dict[str, str]) -> None:
    assert details(pairs) == pairs


@given(
    st.lists(st.tuples(invalid_keys | valid_keys, values), min_size=MAX_KEYS + 1, max_size=40),
)
def test_invalid_keys_do_not_take_one_of_the_ten_places(pairs: list[tuple[str, str]]) -> None:
    source = dict(pairs)
    out = details(source)
    good = [k for k in source if re.fullmatch(r"[a-zA-Z0-9:_-]{1,128}", k)]
    assert list(out) == good[:MAX_KEYS]


def test_exactly_ten_pairs_with_a_none_value_keep_the_eleventh() -> None:
    pairs: dict[str, object | None] = {f"k{i}": f"v{i}" for i in range(11)}
    pairs["k3"] = None
    out = details(pairs)
    assert list(out) == [f"k{i}" for i in range(11) if i != 3]


def test_a_value_of_exactly_max_value_characters_is_kept_whole() -> None:
    assert details({"m": "x" * MAX_VALUE})["m"] == "x" * MAX_VALUE
    cut = details({"m": "x" * (MAX_VALUE + 1)})["m"]
    assert len(cut) == MAX_VALUE
    assert cut.endswith("...")


def test_a_key_of_128_characters_is_kept_and_129_dropped() -> None:
    assert list(details({"k" * 128: "v", "k" * 129: "v"})) == ["k" * 128]


def test_non_ascii_text_keeps_its_letters_and_loses_its_format_characters() -> None:
    assert details({"message": "h\u00e9llo\u200bw\u00f6rld\u0085!"}) == {
        "message": "h\u00e9llo w\u00f6rld !"
    }


def test_values_that_are_not_text_are_written_as_text() -> None:
    assert details({"probeMs": 12, "ok": True, "ratio": 0.5}) == {
        "probeMs": "12",
        "ok": "True",
        "ratio": "0.5",
    }


def test_an_empty_value_is_left_out_and_the_rest_kept() -> None:
    assert details({"step": "", "blank": "  \x00 ", "reason": "probe-failed"}) == {
        "reason": "probe-failed"
    }
