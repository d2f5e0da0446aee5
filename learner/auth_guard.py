"""Who may talk to the learner, and a count of who was turned away.

With server keys (`--auth DIR`, fpac_async.wire.auth) the guard runs pyzmq's ZAP authenticator
(ThreadAuthenticator: a peer is accepted only if its CURVE public key is a file in DIR/actors).
It MUST start before the CURVE sockets bind: libzmq accepts every client when no ZAP handler runs.

With or without keys, it watches the learner's sockets' monitor events in one thread and counts
  auth_refused       handshakes refused: auth_refused_key (a CURVE key not listed: ZAP 400) plus
                     auth_refused_plain (a peer without CURVE: mechanism mismatch, when the
                     learner notices it first; a plain peer that hangs up first on seeing the
                     learner's CURVE greeting is only a failed handshake, below).
  handshakes_failed  other handshakes that never completed: a peer that connected and went away,
                     a stalled half-sent greeting dropped after transport.HANDSHAKE_IVL_MS,
                     a malformed greeting.
  connections        peers connected (handshake done or pending) right now.
The first event of each kind is logged; the learner's metrics rows carry the counts.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from fpac_async.wire.auth import ServerKeys

log = logging.getLogger(__name__)

_EVENTS = (zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
           | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
POLL_MS = 200


class AuthGuard:
    """Start (keys: the ZAP handler) before binding; watch() the bound sockets; close() before
    closing them."""

    def __init__(self, ctx: zmq.Context, keys: ServerKeys | None = None) -> None:
        self.keys = keys
        self._ctx = ctx
        self._authenticator: ThreadAuthenticator | None = None
        self._lock = threading.Lock()
        self._counts = {"auth_refused": 0, "auth_refused_key": 0, "auth_refused_plain": 0,
                        "handshakes_failed": 0}
        self._open = 0
        self._monitors: list[zmq.Socket] = []
        self._watched: list[zmq.Socket] = []
        self._names: dict[zmq.Socket, str] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        if keys is not None:
            auth = ThreadAuthenticator(ctx, log=logging.getLogger("learner.zap"))
            auth.start()
            auth.configure_curve(domain="*", location=keys.allowed_dir)
            self._authenticator = auth
            log.info("CURVE on: encrypted sockets, %d actor keys accepted from %s", keys.allowed,
                     keys.allowed_dir)

    @property
    def secure(self) -> Callable[[zmq.Socket], None] | None:
        """The `secure` argument of transport.learner_sockets: CURVE server keys, or plain."""
        return None if self.keys is None else self.keys.apply

    def watch(self, sockets: dict[str, zmq.Socket]) -> None:
        """Count handshake events of these sockets (name -> socket) from now on, in a thread.
        Call from the thread that made the sockets, before another thread uses them."""
        self._watched = list(sockets.values())
        for name, sock in sockets.items():
            monitor = sock.get_monitor_socket(_EVENTS)
            self._monitors.append(monitor)
            self._names[monitor] = name
        self._thread = threading.Thread(target=self._run, name="auth-guard", daemon=True)
        self._thread.start()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {**self._counts, "connections": self._open}

    def _run(self) -> None:
        poller = zmq.Poller()
        for monitor in self._monitors:
            poller.register(monitor, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                for monitor, _ in poller.poll(POLL_MS):
                    event = recv_monitor_message(monitor)
                    try:
                        self._on_event(self._names[monitor], event)
                    except Exception:  # noqa: BLE001 - this thread must keep draining: libzmq's
                        # IO thread blocks once a monitor queue is full (libzmq issue #3575)
                        log.exception("could not count a socket event %s", event)
        except zmq.ZMQError as e:  # the context was terminated under us: nothing left to watch
            log.debug("auth guard stopped: %s", e)
        finally:
            for monitor in self._monitors:
                monitor.close(linger=0)

    def _on_event(self, socket_name: str, event: dict) -> None:
        kind, value = event["event"], int(event["value"])
        key = None
        with self._lock:
            if kind == zmq.EVENT_ACCEPTED:
                self._open += 1
            elif kind == zmq.EVENT_DISCONNECTED:
                self._open = max(0, self._open - 1)
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                key = "auth_refused_key"
            elif (kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                  and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH):
                key = "auth_refused_plain"
            elif kind in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                          zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                key = "handshakes_failed"
            if key is not None:
                self._counts[key] += 1
                if key.startswith("auth_refused_"):
                    self._counts["auth_refused"] += 1
                first = self._counts[key] == 1
        if key is not None and first:
            why = {"auth_refused_key": f"its key is not listed: ZAP status {value}",
                   "auth_refused_plain": "it does not speak CURVE"}.get(
                key, f"{zmq.Event(kind).name} ({value:#x})")
            log.warning("%s on the %s socket (%s); further ones are only counted",
                        "refused a peer" if key != "handshakes_failed" else "a handshake failed",
                        socket_name, why)

    def close(self) -> None:
        """Call once no other thread uses the watched sockets: monitoring stops on each socket
        before its monitor queue closes (an event sent to a closed monitor queue would block
        libzmq's IO thread for good, libzmq issue #3575)."""
        for sock in self._watched:
            try:
                sock.disable_monitor()
            except zmq.ZMQError as e:
                log.debug("disable_monitor: %s", e)
        self._watched = []
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
