"""Thin pyzmq helpers shared by actors and learner: endpoints, socket factories, send/recv, reject counts.

Topology (docs/INTERFACES.md): the learner binds a data PULL on PORT, a PUB on PORT+1 and a control
PULL on PORT+2; each actor connects a PUSH to PORT and a SUB to PORT+1; each evaluator connects a
PUSH to PORT+2 (its hellos, heartbeats and results must not wait behind throttled data) and a SUB
to PORT+1. Backpressure comes from small high-water marks: when
the learner falls behind, the PUSH queue fills and actors block in send instead of growing memory.
"""
from __future__ import annotations

import ctypes
import logging
import platform
import re
import socket
from dataclasses import dataclass, field
from typing import Callable

import zmq

from fpac_async.wire.protocol import DEFAULT_MAX_BYTES, Message, ProtocolError, decode, encode

log = logging.getLogger(__name__)

Secure = Callable[[zmq.Socket], None]  # CURVE keys, applied before bind/connect (fpac_async.wire.auth)

# Data path queues are kept SHORT on purpose: when the learner stops reading (replay-ratio
# admission), whatever the actor->learner path can hold was produced by older policies and will be
# trained on late. Per actor that is SNDHWM + RCVHWM messages plus the two kernel buffers (set
# explicitly: autotuned loopback TCP buffers grow to megabytes, i.e. thousands of small records).
PUSH_SNDHWM = 2  # steps chunks queued per actor
PULL_RCVHWM = 2  # chunks queued in the learner per connected actor
DATA_SOCKET_BUFFER = 64 * 2**10  # SO_SNDBUF / SO_RCVBUF of the data sockets, bytes
# ... and without frames (the state encoder): a record is ~40 bytes instead of ~21 KB, so 64 KiB
# kernel buffers hold thousands of records (a SAC-state cartpole run's policy lag grew to 13
# weight versions by 20k env steps); 4 KiB (the kernel doubles it) keeps it to a few hundred
# (the recorded 100k run: 3.9 on average, bench/results/learning.jsonl).
STATE_SOCKET_BUFFER = 4 * 2**10
PUB_SNDHWM = 4  # policy broadcasts queued per subscriber (dropped beyond: a newer one follows)
SUB_RCVHWM = 4
RECONNECT_IVL_MS = 100
RECONNECT_IVL_MAX_MS = 5000
# A peer must finish the ZMTP (and CURVE) handshake within this time, or the learner drops it: a
# stalled half-sent greeting holds a file descriptor for 10 s at most (libzmq's default: 30 s).
HANDSHAKE_IVL_MS = 10_000
PUB_MAX_BYTES = 4 * 2**10  # what a PUB receives: subscriptions (ours are empty)
# pyzmq copies frames below this size even with copy=False: zero-copy only pays for large frames.
COPY_THRESHOLD = 64 * 2**10

# glibc allocator settings for processes that move large messages (see tune_malloc_for_messages).
MALLOC_MMAP_THRESHOLD = 8 * 2**20  # frames up to this size come from the heap, not fresh mmaps
MALLOC_TRIM_THRESHOLD = 32 * 2**20  # freed heap memory kept for the next messages, per arena
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers (glibc malloc.h)
_malloc_tuned: bool | None = None

_ENDPOINT = re.compile(r"^(?:tcp://)?(?P<host>\*|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class Endpoints:
    """The addresses of a learner: data (PUSH/PULL), broadcast (PUB/SUB, data port + 1) and
    control (evaluators' PUSH/PULL, data port + 2)."""

    data: str
    pub: str
    control: str


def _split(endpoint: str, what: str) -> tuple[str, int]:
    match = _ENDPOINT.match(endpoint.strip()) if isinstance(endpoint, str) else None
    if match is None:
        raise ValueError(f"{what}: malformed endpoint {endpoint!r}; expected HOST:PORT or tcp://HOST:PORT")
    port = int(match["port"])
    if not 1 <= port <= 65533:  # PORT + 1 and PORT + 2 must be ports too
        raise ValueError(f"{what}: port {port} must be in 1..65533 (the broadcast uses PORT + 1, "
                         f"the control socket PORT + 2)")
    return match["host"], port


def _endpoints(host: str, port: int) -> Endpoints:
    return Endpoints(f"tcp://{host}:{port}", f"tcp://{host}:{port + 1}",
                     f"tcp://{host}:{port + 2}")


def learner_endpoints(bind: str) -> Endpoints:
    """`tcp://*:5555` -> bind data on tcp://*:5555, the broadcast on :5556, control on :5557."""
    return _endpoints(*_split(bind, "--bind"))


def actor_endpoints(learner: str) -> Endpoints:
    """`HOST:5555` or `tcp://HOST:5555` -> connect data to HOST:5555, the broadcast to HOST:5556
    and control (evaluators) to HOST:5557."""
    host, port = _split(learner, "--learner")
    if host == "*":
        raise ValueError(f"--learner: {learner!r} names no host to connect to")
    return _endpoints(host, port)


def tune_malloc_for_messages() -> bool:
    """Keep freed message buffers in the process instead of returning them to the kernel (glibc
    only; once per process; True if applied).

    Every received frame (and every copied sent frame) is a fresh libzmq malloc of the frame's
    size, ~340 KB for a 16-record 84x84 chunk. glibc's defaults serve that from an mmap or trim it
    off the heap top when freed, so the next message faults its pages in again: measured ~15-30
    page faults per message on each side (bench/bench_transport.py). Fixed thresholds make the
    buffers recycle: at most MALLOC_TRIM_THRESHOLD of free memory per malloc arena stays mapped.
    """
    global _malloc_tuned
    if _malloc_tuned is None:
        _malloc_tuned = False
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL(None)
                _malloc_tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)
                                     and libc.mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD))
            except (OSError, AttributeError) as e:  # no libc symbol table: keep the defaults
                log.debug("mallopt unavailable: %s", e)
    return _malloc_tuned


def _bound(sock: zmq.Socket, address: str) -> zmq.Socket:
    """sock bound to address; on failure (e.g. address in use) the socket is closed before the
    error propagates: an open socket would make ctx.term() block forever (issue 20)."""
    try:
        sock.bind(address)
    except zmq.ZMQError:
        sock.close(linger=0)
        raise
    return sock


def _socket(ctx: zmq.Context, kind: int, linger_ms: int, secure: Secure | None = None) -> zmq.Socket:
    sock = ctx.socket(kind)
    if secure is not None:
        secure(sock)
    sock.setsockopt(zmq.LINGER, linger_ms)
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
    sock.copy_threshold = COPY_THRESHOLD
    return sock


def push_socket(ctx: zmq.Context, connect: str, sndhwm: int = PUSH_SNDHWM, linger_ms: int = 1000,
                send_timeout_ms: int = -1, sndbuf: int = DATA_SOCKET_BUFFER,
                secure: Secure | None = None) -> zmq.Socket:
    """Actor data socket. IMMEDIATE: queue only to a live connection, so a send with no learner
    blocks (or raises zmq.Again) instead of piling up in a pipe to nobody. sndbuf: the kernel
    send buffer in bytes (-1: the OS default, autotuned; see DATA_SOCKET_BUFFER). Tunes this process's allocator for
    large messages (tune_malloc_for_messages)."""
    tune_malloc_for_messages()
    sock = _socket(ctx, zmq.PUSH, linger_ms, secure)
    sock.setsockopt(zmq.SNDHWM, sndhwm)
    sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.setsockopt(zmq.SNDTIMEO, send_timeout_ms)
    sock.setsockopt(zmq.SNDBUF, sndbuf)
    sock.connect(connect)
    return sock


def pull_socket(ctx: zmq.Context, bind: str, max_bytes: int = DEFAULT_MAX_BYTES,
                rcvhwm: int = PULL_RCVHWM, linger_ms: int = 0,
                rcvbuf: int = DATA_SOCKET_BUFFER, secure: Secure | None = None) -> zmq.Socket:
    """Learner data socket. MAXMSGSIZE makes libzmq drop (and disconnect) any frame over max_bytes
    before Python sees it; decode() still caps the total of all frames. rcvbuf: the kernel receive
    buffer in bytes (-1: the OS default, autotuned; see DATA_SOCKET_BUFFER). Tunes this process's allocator for large
    messages (tune_malloc_for_messages)."""
    tune_malloc_for_messages()
    sock = _socket(ctx, zmq.PULL, linger_ms, secure)
    sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_IVL_MS)
    sock.setsockopt(zmq.RCVHWM, rcvhwm)
    sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)
    sock.setsockopt(zmq.RCVBUF, rcvbuf)
    return _bound(sock, bind)


def pub_socket(ctx: zmq.Context, bind: str, sndhwm: int = PUB_SNDHWM, linger_ms: int = 0,
               secure: Secure | None = None) -> zmq.Socket:
    """Learner broadcast socket. PUB drops for a slow subscriber past SNDHWM (never blocks).
    With `secure` (CURVE server keys) a SUB must authenticate to receive anything."""
    sock = _socket(ctx, zmq.PUB, linger_ms, secure)
    sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_IVL_MS)
    sock.setsockopt(zmq.MAXMSGSIZE, PUB_MAX_BYTES)
    sock.setsockopt(zmq.SNDHWM, sndhwm)
    return _bound(sock, bind)


def sub_socket(ctx: zmq.Context, connect: str, max_bytes: int = DEFAULT_MAX_BYTES,
               rcvhwm: int = SUB_RCVHWM, linger_ms: int = 0,
               secure: Secure | None = None) -> zmq.Socket:
    """Actor broadcast socket, subscribed to everything. PUB/SUB loses what was sent before the
    subscription reached the learner: actors send hello until a policy arrives."""
    sock = _socket(ctx, zmq.SUB, linger_ms, secure)
    sock.setsockopt(zmq.RCVHWM, rcvhwm)
    sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(connect)
    return sock


CONTROL_RCVHWM = 64  # control messages queued per evaluator (small: hello, heartbeat, result)
CONTROL_MAX_BYTES = 1 * 2**20  # hellos, heartbeats and eval results are a few hundred bytes


def learner_sockets(ctx: zmq.Context, bind: str, max_bytes: int = DEFAULT_MAX_BYTES,
                    data_buffer: int = DATA_SOCKET_BUFFER, secure: Secure | None = None
                    ) -> tuple[zmq.Socket, zmq.Socket, zmq.Socket]:
    """(data PULL, broadcast PUB, control PULL) bound as `--bind` says; none is left bound if
    one of them cannot bind. data_buffer: the data socket's kernel receive buffer. secure: CURVE
    server keys for all three (fpac_async.wire.auth.ServerKeys.apply; a ZAP handler must run)."""
    ep = learner_endpoints(bind)
    made: list[zmq.Socket] = []
    try:
        made.append(pull_socket(ctx, ep.data, max_bytes, rcvbuf=data_buffer, secure=secure))
        made.append(pub_socket(ctx, ep.pub, secure=secure))
        made.append(pull_socket(ctx, ep.control, CONTROL_MAX_BYTES, rcvhwm=CONTROL_RCVHWM,
                                rcvbuf=-1, secure=secure))
    except zmq.ZMQError:
        for sock in made:
            sock.close(linger=0)
        raise
    return made[0], made[1], made[2]


def actor_sockets(ctx: zmq.Context, learner: str, max_bytes: int = DEFAULT_MAX_BYTES,
                  secure: Secure | None = None) -> tuple[zmq.Socket, zmq.Socket]:
    """(data PUSH, broadcast SUB) connected to `--learner`; SUB first so no broadcast is missed.
    secure: CURVE client keys (fpac_async.wire.auth.ClientKeys.apply) for both."""
    ep = actor_endpoints(learner)
    sub = sub_socket(ctx, ep.pub, max_bytes, secure=secure)
    return push_socket(ctx, ep.data, secure=secure), sub


def send_message(sock: zmq.Socket, msg: Message, flags: int = 0) -> None:
    """Send `msg` as one multipart message. Frames over COPY_THRESHOLD go zero-copy: libzmq reads
    the arrays later from the IO thread, so the caller must not modify them after this call.
    With flags=zmq.NOBLOCK a full queue raises zmq.Again."""
    sock.send_multipart(encode(msg), flags=flags, copy=False)


def recv_message(sock: zmq.Socket, max_bytes: int = DEFAULT_MAX_BYTES,
                 timeout_ms: int | None = None) -> Message | None:
    """The next message, None if none came within timeout_ms (None: wait forever).
    Raises ProtocolError for a message that fails validation (the caller counts it and goes on)."""
    if timeout_ms is not None and not sock.poll(timeout_ms, zmq.POLLIN):
        return None
    return decode(sock.recv_multipart(copy=False), max_bytes)


def receive_all(sock: zmq.Socket, timeout_ms: int, handle: Callable[[Message], None],
                rejects: "RejectCounter", source: str,
                until: Callable[[], bool] = lambda: False) -> None:
    """Handle every message waiting on `sock` (or arriving within timeout_ms for the first); a
    message that fails validation is counted in `rejects` and skipped. Stops once until()."""
    while not until():
        try:
            msg = recv_message(sock, timeout_ms=timeout_ms)
        except ProtocolError as e:
            rejects.add(e, source)
            continue
        if msg is None:
            return
        timeout_ms = 0
        handle(msg)


@dataclass
class RejectCounter:
    """Counts rejected messages per reason; logs the first reject of each reason (no log floods)."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, err: ProtocolError, source: str = "") -> None:
        n = self.counts.get(err.reason, 0) + 1
        self.counts[err.reason] = n
        if n == 1:
            log.warning("rejected a message (%s)%s: %s; further %s rejects are only counted",
                        err.reason, f" from {source}" if source else "", err, err.reason)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def free_port_pair(host: str = "127.0.0.1", attempts: int = 50) -> int:
    """A port P such that P, P+1 and P+2 are all free on `host` (the learner binds data PULL on
    P, PUB on P+1, control PULL on P+2). Racy by nature (another process may take one before the
    learner binds); the learner then fails with 'address in use' (exit 2) and the caller may retry."""
    for _ in range(attempts):
        with socket.socket() as a:
            a.bind((host, 0))
            port = a.getsockname()[1]
            if port >= 65534:
                continue
            if all(_port_free(host, port + k) for k in (1, 2)):
                return port
    raise RuntimeError(f"no three consecutive free ports on {host} after {attempts} tries")


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
