"""learner.auth_guard: counting handshakes must never wedge libzmq. Its monitor queues are read by
one thread; once they close, an event sent to them would block libzmq's IO thread for good
(libzmq issue #3575): no more accepts, and the context never terminates."""
from __future__ import annotations

import socket
import threading

import zmq

from learner.auth_guard import AuthGuard

LOOPBACK = "127.0.0.1"


def test_connections_after_the_guard_closed_do_not_wedge_the_socket():
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port(f"tcp://{LOOPBACK}")
    guard = AuthGuard(ctx)
    guard.watch({"data": pull})
    with socket.create_connection((LOOPBACK, port), timeout=5):
        pass  # one counted failed handshake while watched
    guard.close()
    # More connections than a monitor queue holds (1000 events): with monitoring still on,
    # libzmq's IO thread would block on the closed queue and connects would stall.
    for _ in range(700):
        with socket.create_connection((LOOPBACK, port), timeout=5):
            pass
    ended = threading.Event()

    def end() -> None:
        pull.close(linger=0)
        ctx.term()
        ended.set()
    threading.Thread(target=end, daemon=True).start()
    assert ended.wait(20), "the ZeroMQ context did not terminate"
