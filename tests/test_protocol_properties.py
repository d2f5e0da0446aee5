"""Property-based tests of protocol.decode (hypothesis): whatever arrives (any bytes, any msgpack
header, a valid message with one part changed) either decodes to a message that is valid (it
re-encodes to the same message, its arrays are read-only and of the schema's dtypes) or raises a
ProtocolError; never anything else. Bounded: a fixed seed and a few hundred examples each."""
from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fpac_async import protocol as P

BOUNDED = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CAP = 2**16  # max_bytes for decode: small, so the size checks are reached too

scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | st.binary(max_size=12))
any_value = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8) | st.integers(-5, 5), inner, max_size=4),
    max_leaves=12)


def _valid_messages() -> list[P.Message]:
    n, side = 3, 8
    flags = np.array([P.FIRST, 0, P.TERMINAL], np.uint8)
    steps = P.steps_message(1, 0, 0, 0, np.zeros((n, 3, side, side), np.uint8),
                            np.zeros((n, 2), np.float32), np.ones(n, np.float32), flags,
                            np.zeros(n, np.int32), cam=np.zeros((n, 2), np.float32))
    state = P.steps_message(2, 1, 5, 40, None, np.zeros((n, 1), np.float32),
                            np.zeros(n, np.float32), np.zeros(n, np.uint8), np.ones(n, np.int32),
                            state=np.zeros((n, 4), np.float32))
    return [steps, state,
            P.hello_message(1, "point_reach", 7, (3, 8, 8), 2, settings={"action_repeat": 2}),
            P.stats_message(1, 3, [{"return": 1.5, "length": 10, "env": 0}], {"fps": 9.0}),
            P.eval_result_message(4, 1, 2, [1.0, 2.0], [5, 6], version=3, wall_s=0.5),
            P.heartbeat_message(4, 2, 3, True, eval_id=2, episodes_done=1),
            P.policy_message(1, 2, b"script", np.zeros(6, np.float32), [["w", [2, 3]]]),
            P.weights_message(2, 3, np.zeros(6, np.float32), [["w", [6]]], run=5),
            P.eval_message(3, 3, 1, 4, 2), P.stop_message(4, 3), P.refuse_message(5, 3, 1, P.ACTOR, "x")]


VALID = [[bytes(f) for f in P.encode(m)] for m in _valid_messages()]
HEADERS = [msgpack.unpackb(frames[0]) for frames in VALID]


def check_decode(frames: list[Any]) -> None:
    """The property: a ProtocolError, or a message that is valid by every check we can make."""
    try:
        msg = P.decode(frames, CAP)
    except P.ProtocolError as e:
        assert isinstance(e.reason, str) and e.reason
        return
    schema = P.SCHEMAS[msg.kind]
    for name, arr in msg.arrays.items():
        assert not arr.flags.writeable
        assert arr.dtype == schema.arrays[name].dtype
    again = P.decode([bytes(f) for f in P.encode(msg)], CAP)
    assert (again.kind, again.actor, again.env, again.seq, again.version) == \
        (msg.kind, msg.actor, msg.env, msg.seq, msg.version)
    assert again.meta == msg.meta
    assert again.arrays.keys() == msg.arrays.keys()
    for name, arr in msg.arrays.items():
        assert np.array_equal(again.arrays[name], arr, equal_nan=arr.dtype.kind == "f")


@BOUNDED
@given(st.lists(st.binary(max_size=300), max_size=6))
def test_any_bytes_decode_or_raise_protocol_error(frames):
    check_decode(frames)


@BOUNDED
@given(any_value, st.lists(st.binary(max_size=200), max_size=4))
def test_any_msgpack_header_decodes_or_raises_protocol_error(header, rest):
    check_decode([msgpack.packb(header, use_bin_type=True), *rest])


@BOUNDED
@given(st.sampled_from(range(len(VALID))), st.data())
def test_a_valid_message_with_one_header_field_replaced(index, data):
    header = dict(HEADERS[index])
    key = data.draw(st.sampled_from(sorted(header) + ["extra"]))
    if data.draw(st.booleans()) and key in header:
        del header[key]
    else:
        header[key] = data.draw(any_value)
    check_decode([msgpack.packb(header, use_bin_type=True), *VALID[index][1:]])


@BOUNDED
@given(st.sampled_from(range(len(VALID))), st.data())
def test_a_valid_message_with_its_arrays_or_meta_edited(index, data):
    """Deep edits: one array spec entry or one meta value replaced, or a frame cut/extended."""
    header = msgpack.unpackb(VALID[index][0])
    frames = list(VALID[index][1:])
    edit = data.draw(st.sampled_from(["spec", "meta", "frame"]))
    if edit == "spec" and header["arrays"]:
        i = data.draw(st.integers(0, len(header["arrays"]) - 1))
        j = data.draw(st.integers(0, 2))
        header["arrays"][i][j] = data.draw(any_value | st.lists(st.integers(-2, 2**40), max_size=6))
    elif edit == "meta" and header["meta"]:
        key = data.draw(st.sampled_from(sorted(header["meta"])))
        header["meta"][key] = data.draw(any_value)
    elif frames:
        i = data.draw(st.integers(0, len(frames) - 1))
        cut = data.draw(st.integers(-8, 8))
        frames[i] = frames[i][:cut] if cut < 0 else frames[i] + bytes(cut)
    check_decode([msgpack.packb(header, use_bin_type=True), *frames])


def test_the_valid_examples_decode():
    # The mutation tests start from these: each must be accepted as it is.
    for frames in VALID:
        check_decode(frames)
        assert P.decode(frames, CAP).kind == msgpack.unpackb(frames[0])["kind"]
