"""Wire format: round trip of every kind, one rejection test per fault class, and a mutation fuzz."""
from __future__ import annotations

import random

import msgpack
import numpy as np
import pytest

from bench.bench_fuzz import outcome as fuzz_outcome
from fpac_async.wire import protocol as P

T, H, W, A, D = 3, 8, 6, 2, 5
LAYOUT = [["w", [2, 3]], ["b", [3]], ["log_alpha", []]]  # 6 + 3 + 1 = 10 weights


def make_steps(**over) -> P.Message:
    rng = np.random.default_rng(0)
    kw = dict(actor=1, env=2, seq=7, step0=40,
              obs=rng.integers(0, 256, (T, 3, H, W), dtype=np.uint8),
              action=rng.uniform(-1, 1, (T, A)).astype(np.float32),
              reward=np.array([0.0, 0.5, 1.0], np.float32),
              flags=np.array([P.FIRST, 0, P.TERMINAL], np.uint8),
              version=np.array([3, 3, 4], np.int32),
              cam=np.array([[0, 0], [1.5, -2], [0.25, 0]], np.float32),
              state=rng.standard_normal((T, D)).astype(np.float32))
    kw.update(over)
    return P.steps_message(**kw)


def all_kinds() -> list[P.Message]:
    weights = np.arange(10, dtype=np.float32)
    return [
        make_steps(),
        make_steps(cam=None, state=None),
        P.hello_message(3, "cartpole_swingup", 1234, (3, 84, 84), 1),
        P.stats_message(3, 5, episodes=[{"return": 12.5, "length": 125, "env": 0}],
                        perf={"sps": 310.0, "policy_ms": 1.25}),
        P.stats_message(3, 6),
        P.eval_result_message(3, 8, eval_id=2, returns=[1.5, 2.0], lengths=[1000, 1000], version=9),
        P.policy_message(11, 9, b"torchscript-bytes", weights, LAYOUT, random=False),
        P.weights_message(12, 10, weights, LAYOUT),
        P.weights_message(12, 10, weights, LAYOUT, bf16=True),
        P.eval_message(13, 10, eval_id=2, episodes=10, target_actor=0),
        P.grant_message(14, 10, actors=[0, 3], upto=[120, 96], run=5),
    ]


@pytest.mark.parametrize("msg", all_kinds(), ids=lambda m: m.kind)
def test_round_trip_every_kind(msg: P.Message) -> None:
    frames = P.encode(msg)
    assert len(frames) == 1 + len(msg.arrays)
    out = P.decode([bytes(f) for f in frames])
    assert (out.kind, out.actor, out.env, out.seq, out.version) == (
        msg.kind, msg.actor, msg.env, msg.seq, msg.version)
    assert out.meta == msg.meta
    assert list(out.arrays) == list(msg.arrays)
    for name, arr in msg.arrays.items():
        got = out.arrays[name]
        assert got.dtype == arr.dtype and got.shape == arr.shape
        np.testing.assert_array_equal(got, arr)
        assert not got.flags.writeable  # views of the frame: consumers copy


def test_steps_header_version_is_newest_and_encode_is_zero_copy() -> None:
    msg = make_steps()
    frames = P.encode(msg)
    assert P.decode(frames).version == 4
    obs_frame = frames[1]
    assert isinstance(obs_frame, memoryview)
    assert np.shares_memory(np.frombuffer(obs_frame, np.uint8), msg.arrays["obs"])


def test_encode_converts_big_endian_and_rejects_float64() -> None:
    msg = make_steps(reward=np.array([1, 2, 3], ">f4"))
    np.testing.assert_array_equal(P.decode(P.encode(msg)).arrays["reward"], [1, 2, 3])
    with pytest.raises(P.DtypeError):
        P.encode(make_steps(reward=np.zeros(T, np.float64)))


# ------------------------------------------------------------------------- crafted faults
def header_of(frames: list) -> dict:
    return msgpack.unpackb(bytes(frames[0]), raw=False)


def with_header(frames: list, **changes) -> list:
    """The frames with header fields replaced (a value of DROP removes the field)."""
    header = header_of(frames)
    for key, value in changes.items():
        if value is DROP:
            del header[key]
        else:
            header[key] = value
    return [msgpack.packb(header, use_bin_type=True), *frames[1:]]


DROP = object()


def steps_frames(**over) -> list:
    return [bytes(f) for f in P.encode(make_steps(**over))]


def set_array(frames: list, name: str, spec: list | None = None, data: bytes | None = None) -> list:
    """Replace the header entry and/or the frame of one named array."""
    header = header_of(frames)
    names = [e[0] for e in header["arrays"]]
    i = names.index(name)
    if spec is not None:
        header["arrays"][i] = spec
    out = [msgpack.packb(header, use_bin_type=True), *frames[1:]]
    if data is not None:
        out[1 + i] = data
    return out


def rejects(frames, reason: str, max_bytes: int = P.DEFAULT_MAX_BYTES) -> P.ProtocolError:
    with pytest.raises(P.ProtocolError) as info:
        P.decode(frames, max_bytes=max_bytes)
    assert info.value.reason == reason, str(info.value)
    return info.value


def test_truncated() -> None:
    frames = steps_frames()
    rejects([], "truncated")
    rejects(frames[:-1], "truncated")  # a missing frame
    rejects(frames[:1], "truncated")
    short = frames[:1] + [frames[1][:-1]] + frames[2:]  # obs one byte short
    assert "obs" in str(rejects(short, "truncated"))


def test_oversized() -> None:
    frames = steps_frames()
    total = sum(len(f) for f in frames)
    rejects(frames, "oversized", max_bytes=total - 1)
    P.decode(frames, max_bytes=total)  # exactly at the cap is fine
    huge_meta = with_header(frames, meta={"step0": 0, "pad": "x" * (P.MAX_HEADER_BYTES + 1)})
    rejects(huge_meta, "oversized")


def test_version_and_magic() -> None:
    frames = steps_frames()
    rejects(with_header(frames, v=2), "version")
    rejects(with_header(frames, v=True), "version")
    rejects(with_header(frames, v=DROP), "version")
    rejects(with_header(frames, magic="FPAB"), "magic")
    rejects(with_header(frames, magic=DROP), "magic")


def test_dtype() -> None:
    frames = steps_frames()
    obs_f64 = np.zeros((T, 3, H, W), np.float64).tobytes()
    rejects(set_array(frames, "obs", ["obs", "<f8", [T, 3, H, W]], obs_f64), "dtype")
    rejects(set_array(frames, "obs", ["obs", "|O", [T, 3, H, W]]), "dtype")
    rejects(set_array(frames, "obs", ["obs", ">u4", [T, 3, H, W]]), "dtype")
    rejects(set_array(frames, "reward", ["reward", "<i4", [T]]), "dtype")  # allowed, wrong field
    rejects(set_array(frames, "reward", ["reward", 4, [T]]), "dtype")
    # native and explicit little-endian spellings are both accepted
    P.decode(set_array(frames, "reward", ["reward", "=f4", [T]]))


def test_shape() -> None:
    frames = steps_frames()
    rejects(set_array(frames, "obs", ["obs", "|u1", [T, 3, H, W + 1]]), "truncated")
    rejects(set_array(frames, "obs", None, frames[1] + b"\0"), "shape")  # more bytes than shape
    rejects(set_array(frames, "obs", ["obs", "|u1", [T * 3 * H * W]]), "shape")  # ndim
    rejects(set_array(frames, "obs", ["obs", "|u1", [T, 3, -H, W]]), "shape")
    rejects(set_array(frames, "obs", ["obs", "|u1", [T, 4, H, W]]), "shape")  # 4 channels
    rejects(set_array(frames, "obs", ["obs", "|u1", [T, 3, 2048, W]]), "shape")  # H > 1024
    rejects(set_array(frames, "obs", ["obs", "|u1", [T, 3, H, 1.0 * W]]), "shape")
    rejects(set_array(frames, "obs", ["obs", "|u1", [1, 1, 1, 1, 1, 1]]), "shape")  # ndim 6
    # dims whose product overflows int64: caught with Python ints, not wrapped around
    weights = [bytes(f) for f in P.encode(P.weights_message(0, 0, np.zeros(10, np.float32), LAYOUT))]
    rejects(set_array(weights, "weights", ["weights", "<f4", [2**62]]), "shape")
    rejects(set_array(weights, "weights", ["weights", "<f4", [2**63]]), "shape")
    rejects(set_array(frames, "action", ["action", "<f4", [T, 2**40]]), "shape")


def test_schema() -> None:
    frames = steps_frames(cam=None, state=None)
    no_flags = set_array(frames, "flags", ["cam", "<f4", [T, 2]], bytes(T * 8))
    assert "flags" in str(rejects(no_flags, "schema"))  # a required array missing
    extra = with_header(frames, arrays=header_of(frames)["arrays"] + [["junk", "|u1", [1]]])
    rejects(extra + [b"\0"], "schema")  # an array no kind allows
    dup = set_array(frames, "reward", ["action", "<f4", [T, 1]])
    rejects(dup, "schema")
    rejects(frames + [b"extra"], "schema")  # more frames than arrays
    rejects(with_header(frames, kind="teleport"), "schema")
    rejects(with_header(frames, kind=["steps"]), "schema")
    bad_flags = set_array(frames, "flags", None, bytes([P.FIRST, 8, 0]))
    assert "flags" in str(rejects(bad_flags, "schema"))
    t2 = set_array(frames, "reward", ["reward", "<f4", [T - 1]], frames[3][:-4])
    rejects(t2, "schema")  # inconsistent T
    rejects(with_header(frames, seq=True), "schema")  # bool is not an int
    rejects(with_header(frames, actor=-1), "schema")
    rejects(with_header(frames, env=2**63), "schema")
    rejects(with_header(frames, meta={}), "schema")  # missing step0
    rejects(with_header(frames, meta={"step0": 1, "other": 2}), "schema")
    rejects(with_header(frames, meta={"step0": False}), "schema")
    rejects(with_header(frames, seq=DROP), "schema")
    rejects(with_header(frames, extra=1), "schema")


def test_schema_of_other_kinds() -> None:
    def meta_rejected(msg: P.Message, **meta) -> None:
        frames = [bytes(f) for f in P.encode(msg)]
        rejects(with_header(frames, meta={**msg.meta, **meta}), "schema")

    weights = np.arange(10, dtype=np.float32)
    policy = P.policy_message(1, 1, b"ts", weights, LAYOUT)
    meta_rejected(policy, layout=[["w", [2, 3]]])  # sizes sum to 6, not 10
    meta_rejected(policy, random=1)
    meta_rejected(P.weights_message(1, 1, weights, LAYOUT), layout=[["w", [2, 3, 1, 1, 1, 1]]])
    evaluation = P.eval_message(1, 1, eval_id=0, episodes=10, target_actor=0)
    meta_rejected(evaluation, episodes=0)
    meta_rejected(evaluation, episodes=1001)
    result = P.eval_result_message(0, 0, 1, [1.0, 2.0], [10, 10])
    meta_rejected(result, lengths=[10])
    meta_rejected(result, returns=[1.0, float("nan")])
    stats = P.stats_message(0, 0, episodes=[{"return": 1.0, "length": 5, "env": 0}])
    meta_rejected(stats, episodes=[{"return": 1.0, "length": 5}])
    meta_rejected(stats, perf={"sps": "fast"})
    meta_rejected(P.hello_message(0, "t", 1, (3, 8, 8), 1), action_dim=65)


def test_garbage() -> None:
    rng = np.random.default_rng(1)
    rejects([rng.integers(0, 256, 100, dtype=np.uint8).tobytes()], "garbage")
    rejects([msgpack.packb([1, 2, 3])], "garbage")  # a list, not a map
    rejects([b"\xc1"], "garbage")  # a byte msgpack never uses
    rejects([b"GET / HTTP/1.1\r\n\r\n"], "garbage")
    rejects([msgpack.packb({"a": 1}) + b"trailing"], "garbage")
    rejects([msgpack.packb({1: 2})], "garbage")  # non-string map key
    rejects(["not bytes"], "garbage")
    rejects([b"\x81\xa5magic\xc7\x01\x05x"], "garbage")  # an ext type


def test_fuzz_mutations_raise_only_protocol_errors() -> None:
    """Random byte flips, truncations, insertions and frame drops of valid messages either decode
    to a valid message (it re-encodes to the same message) or raise ProtocolError; any other
    exception fails the test. The mutations are seeded: the tally of outcomes is exact, so a
    validation check that stops refusing (or starts refusing valid messages) changes it; a
    deliberate change of the decoder re-records it (print `outcomes`)."""
    rand = random.Random(1234)
    seeds = [[bytes(f) for f in P.encode(m)] for m in all_kinds()]
    outcomes: dict[str, int] = {}
    for _ in range(600):
        frames = [bytearray(f) for f in rand.choice(seeds)]
        for _ in range(rand.randint(1, 4)):
            i = rand.randrange(len(frames))
            f = frames[i]
            op = rand.randrange(5)
            if op == 0 and f:
                f[rand.randrange(len(f))] = rand.randrange(256)
            elif op == 1 and f:
                del f[rand.randrange(len(f)):]
            elif op == 2:
                f.insert(rand.randrange(len(f) + 1), rand.randrange(256))
            elif op == 3 and len(frames) > 1:
                frames.pop(i)
            elif op == 4:
                frames.append(bytearray(rand.randbytes(rand.randrange(8))))
        result = fuzz_outcome([bytes(f) for f in frames])  # "bad..": neither valid nor refused
        outcomes[result] = outcomes.get(result, 0) + 1
    assert outcomes == {"accepted": 35, "rejected_dtype": 1, "rejected_garbage": 337,
                        "rejected_magic": 6, "rejected_schema": 130, "rejected_shape": 26,
                        "rejected_truncated": 64, "rejected_version": 1}, outcomes


def test_stop_and_weights_random_round_trip():
    from fpac_async.wire import protocol as P
    m = P.decode(P.encode(P.stop_message(3, 7, "budget reached")))
    assert (m.kind, m.seq, m.version, m.meta) == (P.STOP, 3, 7, {"reason": "budget reached"})
    w = P.weights_message(1, 2, np.zeros(3, np.float32), [["a", [3]]], random=True)
    assert P.decode(P.encode(w)).meta["random"] is True
