"""What one weights broadcast costs (issue 19: the lag bound broadcasts every max_policy_lag // 2
updates): bytes on the wire, learner CPU to publish (flat weights + encode + PUB send), actor
CPU to take it (SUB receive + decode + load into the TorchScript policy), per network config.

    python bench/bench_broadcast.py            # rows in bench/results/broadcast.jsonl

Each row also gives the wire rate at 1,000 updates/s (a GPU learner) per subscribed actor, for a
broadcast every 100 updates (the default `--weights-every`: 10 per second) and every 50 (what
`--max-policy-lag 100` sets: 20 per second), and the fan-out: the learner process's CPU (its main
thread and ZeroMQ's IO thread, which copies each broadcast into every subscriber's TCP socket) per
broadcast to 1 and to FANOUT subscriber processes on loopback, each acknowledging every message
before the next goes out (nothing is dropped at the high-water mark). Each config is measured with
the weights sent as f32 and as bf16 (`--weights-wire`).
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time

import numpy as np
import torch
import zmq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from actors.policy import ActorPolicy  # noqa: E402
from bench.provenance import ROOT, append_row, provenance  # noqa: E402
from fpac_async.config import RunConfig, EnvConfig, resolve, with_task_defaults  # noqa: E402
from fpac_async.agent.export import export_policy, script_to_bytes  # noqa: E402
from fpac_async.wire.protocol import decode, encode, weights_message, weights_of  # noqa: E402
from fpac_async.agent.sac import SAC  # noqa: E402
from learner.broadcaster import Broadcaster, policy_weights  # noqa: E402

CONFIGS = {  # name -> (encoder, obs shape, state dim)
    "sac-state cartpole (hidden 1024)": ("state", (6, 84, 84), 5),
    "fpac pixels cartpole (Table I nets)": ("fpac", (6, 84, 84), 0),
}
REPEATS = 50
WIRES = ("f32", "bf16")  # --weights-wire
FANOUT = (1, 15)  # subscriber processes (15: the GPU suite's actor count)
FANOUT_REPEATS = 20
SUBSCRIBER = """
import sys, time, zmq
ctx = zmq.Context()
sub, ack = ctx.socket(zmq.SUB), ctx.socket(zmq.PUSH)
sub.setsockopt(zmq.SUBSCRIBE, b"")
sub.connect(sys.argv[1]); ack.connect(sys.argv[2])
cpu, ready = [], False
while len(cpu) < int(sys.argv[3]):
    t0 = time.process_time()
    frames = sub.recv_multipart(copy=False)
    if len(frames) == 1:  # a ping: the publisher waits until every subscriber has one
        if not ready:
            ready = True
            ack.send(b"ready")
        continue
    cpu.append(time.process_time() - t0)
    ack.send(b"got")
ack.send(repr(sorted(cpu)[len(cpu) // 2]).encode())
ack.close(linger=10_000)  # delivered before the process exits
sub.close(linger=0)
ctx.term()
"""


def cpu_s(fn) -> float:
    """Process CPU seconds of one call, median over REPEATS."""
    times = []
    for _ in range(REPEATS):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return float(np.median(times))


def measure(name: str, encoder: str, obs_shape: tuple, state_dim: int, wire: str) -> dict:
    cfg = resolve(with_task_defaults(RunConfig(env=EnvConfig(task="cartpole_swingup"))))
    agent = cfg.agent.__class__(**{**cfg.agent.__dict__, "encoder": encoder})
    sac = SAC(agent, obs_shape, 1, "cpu", state_dim=state_dim)
    ctx = zmq.Context()
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    time.sleep(0.3)  # the subscription reaches the publisher
    caster = Broadcaster(pub, run=1, bf16=wire == "bf16")
    flat, layout = policy_weights(sac)
    policy = ActorPolicy(1, 1, 0, agent.frame_stack)
    policy.load_policy(np.frombuffer(script_to_bytes(export_policy(sac)), np.uint8), flat, layout,
                       1, False)
    version = [1]

    def publish() -> None:
        version[0] += 1
        caster.publish_weights(sac, version[0])

    def take() -> None:
        msg = decode(sub.recv_multipart(copy=False))
        policy.apply_weights(msg.version, weights_of(msg), msg.meta["layout"], random=False)

    sizes = []
    for _ in range(REPEATS):  # sizes, and a warm-up of both sides
        publish()
        frames = sub.recv_multipart()
        sizes.append(sum(len(f) for f in frames))
    learner_s = cpu_s(publish)
    actor_s = cpu_s(take)  # the REPEATS broadcasts above are waiting on SUB
    ctx.destroy(linger=0)
    nbytes = int(np.median(sizes))
    return {"config": name, "wire": wire, "params": int(flat.size), "bytes": nbytes,
            "learner_cpu_ms": round(1e3 * learner_s, 3), "actor_cpu_ms": round(1e3 * actor_s, 3),
            "mb_per_s_per_actor_at_1000_ups": {"weights_every_100": round(nbytes * 10 / 1e6, 2),
                                               "weights_every_50": round(nbytes * 20 / 1e6, 2)},
            "fanout": {str(n): fanout(encode(weights_message(0, 2, flat, layout, run=1,
                                                             bf16=wire == "bf16")), n)
                       for n in FANOUT}}


def fanout(frames: list, subscribers: int) -> dict:
    """Learner-process CPU per broadcast of `frames` to `subscribers` SUB processes on loopback
    (and the subscribers' median CPU to receive one), each broadcast acknowledged by all."""
    ctx = zmq.Context()
    pub, acks = ctx.socket(zmq.PUB), ctx.socket(zmq.PULL)
    acks.setsockopt(zmq.RCVTIMEO, 120_000)  # a dead subscriber fails the bench, never hangs it
    port, ack_port = pub.bind_to_random_port("tcp://127.0.0.1"), acks.bind_to_random_port("tcp://127.0.0.1")
    procs = [subprocess.Popen([sys.executable, "-c", SUBSCRIBER, f"tcp://127.0.0.1:{port}",
                               f"tcp://127.0.0.1:{ack_port}", str(FANOUT_REPEATS)])
             for _ in range(subscribers)]
    try:
        ready = 0
        while ready < subscribers:  # until every subscriber's subscription is in place
            pub.send(b"ping")
            while acks.poll(50):
                ready += acks.recv() == b"ready"
        sub_s: list[float] = []  # each subscriber's median, sent after its last "got"
        t0 = time.process_time()
        for _ in range(FANOUT_REPEATS):
            pub.send_multipart(frames, copy=False)
            got = 0
            while got < subscribers:
                ack = acks.recv()
                if ack == b"got":
                    got += 1
                else:  # a subscriber that took its last broadcast sends its median at once
                    sub_s.append(float(ack))
        learner_s = (time.process_time() - t0) / FANOUT_REPEATS
        sub_s += [float(acks.recv()) for _ in range(subscribers - len(sub_s))]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        ctx.destroy(linger=0)
    return {"learner_cpu_ms": round(1e3 * learner_s, 3),
            "subscriber_cpu_ms_median": round(1e3 * float(np.median(sub_s)), 3)}


def main() -> int:
    torch.set_num_threads(1)
    stamp = provenance()
    for (name, (encoder, obs_shape, state_dim)), wire in itertools.product(CONFIGS.items(),
                                                                          WIRES):
        row = measure(name, encoder, obs_shape, state_dim, wire)
        print(row)
        append_row(os.path.join(ROOT, "bench", "results", "broadcast.jsonl"),
                   {"bench": "broadcast", **stamp, **row})
    return 0


if __name__ == "__main__":
    sys.exit(main())
