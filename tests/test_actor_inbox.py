"""actors/inbox.py on loopback: an actor blocked sending (the learner's queue full) still reads
the learner's broadcasts, holding only the newest weights, policy and grant, in order."""
from __future__ import annotations

import threading
import time

import numpy as np
import zmq

from actors.inbox import Inbox
from fpac_async.wire import protocol as P
from fpac_async.wire.transport import (RejectCounter, free_port_pair, pub_socket, pull_socket,
                                       push_socket, recv_message, sub_socket)

LAYOUT = [["w", [4]]]


def weights(version: int) -> P.Message:
    return P.weights_message(version, version, np.full(4, version, np.float32), LAYOUT)


def wait_for(cond, timeout_s: float = 10.0, what=lambda: "") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out {what()}"
        time.sleep(0.01)


def test_a_blocked_send_keeps_reading_broadcasts_and_holds_the_newest_of_each_kind() -> None:
    """Breaks it catches: a plain blocking send (nothing is read while blocked: the wait for
    each held broadcast times out), no conflation of weights (twelve held), grants conflated
    (one naming the actor lost to a newer one) or handled before the weights, eval requests
    held, or held messages not handled first."""
    ctx = zmq.Context()
    port = free_port_pair()
    pull = pull_socket(ctx, f"tcp://127.0.0.1:{port}", rcvhwm=1)
    pub = pub_socket(ctx, f"tcp://127.0.0.1:{port + 1}")
    sub = sub_socket(ctx, f"tcp://127.0.0.1:{port + 1}")
    push = push_socket(ctx, f"tcp://127.0.0.1:{port}", sndhwm=1)
    inbox = Inbox(sub, push, RejectCounter())
    try:
        wait_for(lambda: (pub.send_multipart(P.encode(weights(0))), sub.poll(50))[1])
        inbox.receive(0, lambda m: None)  # subscribed: what came so far is handled
        # 64 MB of 256 KB messages that nobody reads yet: the sends block within a few.
        data = [P.weights_message(i, 0, np.zeros(65536, np.float32), [["w", [65536]]])
                for i in range(256)]
        sent = threading.Event()
        sender = threading.Thread(target=lambda: ([inbox.send(m) for m in data],
                                                  sent.set()), daemon=True)
        sender.start()
        def held() -> list[tuple[str, int]]:
            return [(m.kind, m.version) for m in inbox.held + inbox.grants]

        def publish_until(msg: P.Message, seen) -> None:
            """PUB may drop (libzmq counts its small high-water mark in batches): re-send."""
            deadline = time.monotonic() + 10.0
            while not seen():
                assert time.monotonic() < deadline, f"timed out {held()}"
                pub.send_multipart(P.encode(msg))
                time.sleep(0.05)

        for v in range(1, 13):  # each broadcast is read while the send is blocked
            publish_until(weights(v), lambda v=v: held()[:1] == [(P.WEIGHTS, v)])
            publish_until(P.grant_message(v, v, [1], [10 * v]),
                          lambda v=v: held()[-1:] == [(P.GRANT, v)])
            pub.send_multipart(P.encode(P.eval_message(v, v, eval_id=v, episodes=1,
                                                       target_actor=0)))  # dropped
            assert [k for k, _ in held()] == [P.WEIGHTS] + [P.GRANT] * (len(held()) - 1)
        assert not sent.is_set(), "the sends never blocked: the test shows nothing"
        while not sent.is_set():  # the learner reads again: the sends go through
            recv_message(pull, timeout_ms=100)
        sender.join(10)
        handled: list[P.Message] = []
        inbox.receive(0, handled.append)
        # The newest weights first, then every grant in order: grant 11, sent before weights 12
        # replaced weights 11, does not come before them (it would look like weights missed).
        assert (handled[0].kind, handled[0].version) == (P.WEIGHTS, 12)
        versions = [m.version for m in handled[1:]]  # every grant, in order (re-sent ones too)
        assert {m.kind for m in handled[1:]} == {P.GRANT}
        assert versions == sorted(versions) and set(versions) == set(range(1, 13))
        assert inbox.held == [] and inbox.grants == []
        np.testing.assert_array_equal(handled[0].arrays["weights"], np.full(4, 12, np.float32))
    finally:
        for s in (pull, pub, sub, push):
            s.close(linger=0)
        ctx.term()
