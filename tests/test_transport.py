"""Transport helpers over REAL ZeroMQ sockets on loopback (free ports picked per test)."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterator

import numpy as np
import pytest
import zmq

from actors.sender import StreamSender
from fpac_async.wire.transport import free_port_pair
from fpac_async.wire import protocol as P
from fpac_async.wire import transport as Z

LOOPBACK = "127.0.0.1"


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)  # closes every socket of the test with linger 0, then terminates


def open_pair(ctx: zmq.Context, max_bytes: int = P.DEFAULT_MAX_BYTES):
    """(pull, pub, push, sub) wired as learner and one actor; retries if a port got taken."""
    for _ in range(5):
        port = free_port_pair()
        try:
            pull, pub, _control = Z.learner_sockets(ctx, f"tcp://{LOOPBACK}:{port}", max_bytes)
        except zmq.ZMQError:
            continue
        push, sub = Z.actor_sockets(ctx, f"{LOOPBACK}:{port}", max_bytes)
        return pull, pub, push, sub
    raise RuntimeError("could not bind a learner port pair")


def steps(seq: int, side: int = 8) -> P.Message:
    n = 2
    return P.steps_message(actor=1, env=0, seq=seq, step0=seq * n,
                           obs=np.full((n, 3, side, side), seq % 256, np.uint8),
                           action=np.zeros((n, 2), np.float32), reward=np.ones(n, np.float32),
                           flags=np.array([P.FIRST, 0], np.uint8), version=np.zeros(n, np.int32))


def until(fn: Callable[[], P.Message | None], seconds: float = 10.0) -> P.Message:
    """Call fn until it returns a message (fn waits itself; this only bounds the total)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        msg = fn()
        if msg is not None:
            return msg
    raise AssertionError(f"nothing arrived within {seconds} s")


def test_endpoints() -> None:
    assert Z.learner_endpoints("tcp://*:5555") == Z.Endpoints("tcp://*:5555", "tcp://*:5556",
                                                              "tcp://*:5557")
    assert Z.learner_endpoints("0.0.0.0:7000") == Z.Endpoints(
        "tcp://0.0.0.0:7000", "tcp://0.0.0.0:7001", "tcp://0.0.0.0:7002")
    want = Z.Endpoints("tcp://gpu-box.local:5555", "tcp://gpu-box.local:5556",
                       "tcp://gpu-box.local:5557")
    assert Z.actor_endpoints("gpu-box.local:5555") == want
    assert Z.actor_endpoints("tcp://gpu-box.local:5555") == want
    for bad in ["", "host", "tcp://host", "host:abc", "udp://host:5555", "host:65534", "host:0",
                "host:5555/x", "ho st:5555", "tcp://*:"]:
        with pytest.raises(ValueError):
            Z.actor_endpoints(bad)
    with pytest.raises(ValueError, match="no host"):
        Z.actor_endpoints("*:5555")
    with pytest.raises(ValueError, match="--bind"):
        Z.learner_endpoints("tcp://*:99999")


def test_push_pull_round_trip(ctx: zmq.Context) -> None:
    pull, _, push, _ = open_pair(ctx)
    assert Z.recv_message(pull, timeout_ms=0) is None
    sent = steps(seq=5, side=64)  # a 24 KiB obs frame
    Z.send_message(push, sent)
    got = until(lambda: Z.recv_message(pull, timeout_ms=200))
    assert (got.kind, got.actor, got.seq, got.meta) == ("steps", 1, 5, {"step0": 10})
    for name, arr in sent.arrays.items():
        np.testing.assert_array_equal(got.arrays[name], arr)
        assert got.arrays[name].dtype == arr.dtype


def test_big_frames_go_zero_copy_and_arrive_intact(ctx: zmq.Context) -> None:
    pull, _, push, _ = open_pair(ctx)
    sent = steps(seq=9, side=256)  # 384 KiB obs frame: over the copy threshold
    Z.send_message(push, sent)
    got = until(lambda: Z.recv_message(pull, timeout_ms=200))
    np.testing.assert_array_equal(got.arrays["obs"], sent.arrays["obs"])


def test_pull_rejects_garbage_then_keeps_working(ctx: zmq.Context) -> None:
    pull, _, push, _ = open_pair(ctx)
    push.send_multipart([b"\xc1not msgpack"])
    with pytest.raises(P.ProtocolError) as info:
        until(lambda: Z.recv_message(pull, timeout_ms=200))
    assert info.value.reason == "garbage"
    Z.send_message(push, steps(seq=1))
    assert until(lambda: Z.recv_message(pull, timeout_ms=200)).seq == 1


def test_maxmsgsize_drops_oversized_and_keeps_working(ctx: zmq.Context) -> None:
    max_bytes = 50_000
    pull, _, push, _ = open_pair(ctx, max_bytes=max_bytes)
    Z.send_message(push, steps(seq=100, side=128))  # obs frame 96 KiB > MAXMSGSIZE: libzmq drops it
    # libzmq closes the offending connection; the PUSH reconnects. Keep sending small messages
    # (a send may land in the dying pipe) until one gets through.
    received = None
    for seq in range(1, 100):
        try:
            Z.send_message(push, steps(seq=seq), flags=zmq.NOBLOCK)
        except zmq.Again:  # reconnecting: IMMEDIATE refuses to queue to nobody
            pass
        received = Z.recv_message(pull, max_bytes, timeout_ms=100)
        if received is not None:
            break
    assert received is not None and received.seq != 100
    while (msg := Z.recv_message(pull, max_bytes, timeout_ms=50)) is not None:
        assert msg.seq != 100


def test_pub_sub_policy(ctx: zmq.Context) -> None:
    _, pub, _, sub = open_pair(ctx)
    weights = np.linspace(-1, 1, 10, dtype=np.float32)
    layout = [["w", [2, 5]]]
    policy = P.policy_message(seq=3, version=7, script=b"\x00torchscript" * 10_000, weights=weights,
                              layout=layout)

    def publish_then_poll() -> P.Message | None:
        Z.send_message(pub, policy)  # re-publish: PUB drops anything sent before SUB joined
        return Z.recv_message(sub, timeout_ms=100)

    got = until(publish_then_poll)
    assert (got.kind, got.version, got.meta) == ("policy", 7, {"layout": layout, "random": False})
    assert got.arrays["script"].tobytes() == b"\x00torchscript" * 10_000
    np.testing.assert_array_equal(got.arrays["weights"], weights)


def test_push_queue_is_bounded(ctx: zmq.Context) -> None:
    """Nobody reads the PULL: sends fill the HWMs and kernel buffers, then NOBLOCK raises Again."""
    port = free_port_pair()
    pull = Z.pull_socket(ctx, f"tcp://{LOOPBACK}:{port}", rcvhwm=1)
    push = Z.push_socket(ctx, f"tcp://{LOOPBACK}:{port}", sndhwm=1, send_timeout_ms=5000)
    msg = steps(seq=0, side=256)  # ~384 KiB per message
    Z.send_message(push, msg)  # blocks until connected (IMMEDIATE), so the rest measure the queue
    with pytest.raises(zmq.Again):
        for _ in range(2000):  # 750 MiB if nothing bounded the queue; kernel buffers hold a few MiB
            Z.send_message(push, msg, flags=zmq.NOBLOCK)
    assert pull.poll(5000, zmq.POLLIN)  # the messages are there, just not being read


def test_pooled_zero_copy_chunks_arrive_intact_through_a_slow_receiver(ctx: zmq.Context) -> None:
    """The sender reuses chunk buffers once ZeroMQ released them. Tiny kernel buffers and HWMs and
    a slow reader keep zero-copy messages queued inside libzmq while the sender goes on: a chunk
    reused too early would be overwritten in flight and arrive with later records' content."""
    port = free_port_pair()
    pull = Z.pull_socket(ctx, f"tcp://{LOOPBACK}:{port}", rcvhwm=1, rcvbuf=8192)
    push = Z.push_socket(ctx, f"tcp://{LOOPBACK}:{port}", sndhwm=1, sndbuf=8192,
                         send_timeout_ms=10_000)
    side, per_msg, messages = 64, 8, 40
    assert per_msg * 3 * side * side > Z.COPY_THRESHOLD  # obs frames really go zero-copy
    sender = StreamSender(lambda m: Z.send_message(push, m), 0, 1, (3, side, side), 1, 0, per_msg)

    def produce() -> None:
        for j in range(per_msg * messages):
            frame = np.full((1, 3, side, side), j % 251, np.uint8)
            sender.add(frame, np.full((1, 1), j, np.float32), np.full(1, j, np.float32),
                       np.zeros(1, np.uint8), version=j)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    rewards, obs_ok = [], []
    for k in range(messages):
        if k < messages // 2:
            time.sleep(0.005)  # the slow learner: the sender runs ahead until its queue is full
        got = until(lambda: Z.recv_message(pull, timeout_ms=200))
        reward = got.arrays["reward"]
        rewards.extend(int(r) for r in reward)
        want = (reward.astype(np.int64) % 251).astype(np.uint8)
        obs_ok.append(bool(np.all(got.arrays["obs"] == want[:, None, None, None])))
        np.testing.assert_array_equal(got.arrays["version"], reward.astype(np.int32))
    thread.join(timeout=10)
    assert rewards == list(range(per_msg * messages)) and all(obs_ok)
    assert sender.chunks_allocated < messages  # buffers were reused, so the check above means it


def test_push_without_learner_does_not_queue(ctx: zmq.Context) -> None:
    push = Z.push_socket(ctx, f"tcp://{LOOPBACK}:{free_port_pair()}")
    with pytest.raises(zmq.Again):
        Z.send_message(push, steps(seq=0), flags=zmq.NOBLOCK)


def test_malloc_tuning_applies_once_per_process_on_glibc() -> None:
    import platform  # noqa: PLC0415
    first = Z.tune_malloc_for_messages()
    assert Z.tune_malloc_for_messages() is first
    assert first is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")


def test_reject_counter_counts_all_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    counter = Z.RejectCounter()
    with caplog.at_level(logging.WARNING, logger="fpac_async.wire.transport"):
        for _ in range(3):
            counter.add(P.GarbageError("header is not msgpack"), source="actor 2")
        counter.add(P.ShapeError("array obs: bad"))
    assert counter.counts == {"garbage": 3, "shape": 1} and counter.total == 4
    assert len(caplog.records) == 2
    assert "actor 2" in caplog.records[0].getMessage()
