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

from bench.bench_fuzz import valid_messages
from fpac_async.wire import protocol as P

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


VALID = valid_messages()  # one of each kind, as the fuzz benchmark seeds its mutations
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
