"""The state codec: exact round trips, runs of numbers packed, plain lists left to msgpack."""

from __future__ import annotations

import msgpack
import pytest

from stream_monitor.state import codec


@pytest.mark.parametrize("value", [
    [f"fraud-{i:09d}" for i in range(1000)],             # the join's remembered ids
    ["a", 1, 2.5, None, True, b"\x00"] * 3,              # mixed scalars
    [1, 2.0] * 8,                                        # ints and floats: no run to pack
    [2**63 + 1] * 9,                                     # ints beyond int64: no run to pack
    ("x", "y", "z"),                                     # a tuple is a msgpack array too
])
def test_a_list_of_plain_scalars_is_exactly_what_msgpack_makes_of_it(value):
    assert codec.encode(value) == msgpack.packb(value, use_bin_type=True)
    assert codec.decode(codec.encode(value)) == list(value)


def test_runs_of_floats_and_ints_are_packed_and_round_trip():
    # floats take 8 bytes each; ints the narrowest width that holds the run (-500..499: 2 bytes)
    state = {"floats": [i / 7 for i in range(1000)], "ints": list(range(-500, 500)),
             "nested": [[0.5] * 8, ["a", [1.5] * 10], {"k": [3] * 8}], "short": [1.0, 2.0]}
    blob = codec.encode(state)
    assert codec.decode(blob) == state
    assert 10_000 <= len(blob) < 10_400


@pytest.mark.parametrize("run, width", [([4] * 500, 1), ([-129] * 500, 2), ([70_000] * 500, 4),
                                        ([2**40] * 500, 8)])
def test_an_int_run_takes_the_narrowest_width(run, width):
    blob = codec.encode(run)
    assert codec.decode(blob) == run
    assert width * 500 <= len(blob) <= width * 500 + 8
