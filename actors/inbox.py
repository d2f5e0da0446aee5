"""The actor's side of the learner's PUB socket: broadcasts are read even while the actor is
blocked sending, so PUB never drops the weights of an actor held by backpressure.

PUB drops the NEWEST message for a subscriber whose queue is full (SNDHWM + RCVHWM messages,
fpac_async/wire/transport.py). An actor blocked in a send while the learner throttles reads
nothing, so a few grants or weights queued for it can push the next weights out, and it would
act with an old policy until the next broadcast. (A safeguard: the measured lag growth with 8
paced actors at 2007205 came from a grant-wait fallback, learner/pacing.py, not from drops.)
`send` waits for room on the PUSH socket and meanwhile moves every broadcast into `held`; the
actor handles them between steps, in order, grants after the rest. A newer `weights` or `policy`
replaces a held one of its kind (each is complete: the newest is all that matters), so a grant,
which trails the weights it was sent with, would otherwise come before the weights that replaced
them and look like weights missed; grants are all kept (the last MAX_HELD_GRANTS: one naming this
actor must not be lost to a newer one that leaves it out); `eval` requests are for evaluators and
dropped.
"""
from __future__ import annotations

from typing import Callable

import zmq

from fpac_async.wire import protocol as P
from fpac_async.wire.transport import RejectCounter, receive_all, send_message

Handle = Callable[[P.Message], None]
LATEST_ONLY = (P.WEIGHTS, P.POLICY)
MAX_HELD_GRANTS = 64


class Inbox:
    """Broadcasts read from `sub`, held while the actor cannot handle them."""

    def __init__(self, sub: zmq.Socket, push: zmq.Socket, rejects: RejectCounter,
                 source: str = "learner broadcast"):
        self.sub, self.push, self.rejects, self.source = sub, push, rejects, source
        self.held: list[P.Message] = []
        self.grants: list[P.Message] = []  # handled after `held`: they trail the weights
        self._poller = zmq.Poller()  # room on PUSH, or a broadcast on SUB
        self._poller.register(push, zmq.POLLOUT)
        self._poller.register(sub, zmq.POLLIN)

    def hold(self, msg: P.Message) -> None:
        if msg.kind == P.EVAL:
            return
        if msg.kind == P.GRANT:
            self.grants = (self.grants + [msg])[-MAX_HELD_GRANTS:]
            return
        if msg.kind in LATEST_ONLY:
            self.held = [m for m in self.held if m.kind != msg.kind]
        self.held.append(msg)

    def receive(self, timeout_ms: int, handle: Handle) -> None:
        """Handle what is held, then every message waiting on SUB (or arriving within
        timeout_ms for the first, if nothing was held)."""
        held, self.held, self.grants = self.held + self.grants, [], []
        for msg in held:
            handle(msg)
        receive_all(self.sub, 0 if held else timeout_ms, handle, self.rejects, self.source)

    def send(self, msg: P.Message, poll_ms: int = 100) -> None:
        """Send on PUSH, blocking while its queue is full (the backpressure), reading SUB into
        `held` meanwhile."""
        while True:
            try:
                send_message(self.push, msg, zmq.NOBLOCK)
                return
            except zmq.Again:
                pass
            ready = dict(self._poller.poll(poll_ms))
            if self.sub in ready:
                receive_all(self.sub, 0, self.hold, self.rejects, self.source)
