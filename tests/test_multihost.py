"""Learner and actors on two "hosts": two Linux network namespaces joined by a veth pair, each with
its own private address and its own loopback. The learner binds only its address
(`--bind tcp://10.213.N.1:PORT`); the actors reach it only through that address over the veth
(`--learner 10.213.N.1:PORT`). The run completes with steps from both actors.

Skips (with the reason) where it cannot run: not root, no `ip` (iproute2), or the kernel/sandbox
refuses network namespaces or veth pairs.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = ["--task", "point_reach", "--seed", "0", "--encoder", "state"]
LEARNER = ["--gpus", "0", "--hidden-dim", "32", "--batch-size", "16", "--initial-random-steps",
           "100", "--eval-every-env-steps", "0", "--replay-ratio", "0.25", "--env-steps", "600",
           "--log-every-s", "2"]
PORT = 5555
pytestmark = pytest.mark.timeout(420)


def ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def two_hosts():
    """(learner namespace, actor namespace, learner address, actor address)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces and a veth pair")
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (install iproute2)")
    tag = os.getpid() % 100_000
    ns_l, ns_a = f"fpac-l{tag}", f"fpac-a{tag}"
    net = f"10.213.{tag % 250 + 1}"
    made = []
    try:
        for ns in (ns_l, ns_a):
            r = ip("netns", "add", ns)
            if r.returncode != 0:
                pytest.skip(f"cannot create a network namespace here: {r.stderr.strip()}")
            made.append(ns)
        veth_l, veth_a = f"fvl{tag}", f"fva{tag}"
        steps = [("link", "add", veth_l, "type", "veth", "peer", "name", veth_a),
                 ("link", "set", veth_l, "netns", ns_l), ("link", "set", veth_a, "netns", ns_a),
                 ("-n", ns_l, "addr", "add", f"{net}.1/24", "dev", veth_l),
                 ("-n", ns_a, "addr", "add", f"{net}.2/24", "dev", veth_a)]
        steps += [("-n", ns, "link", "set", dev, "up")
                  for ns, dev in ((ns_l, veth_l), (ns_a, veth_a), (ns_l, "lo"), (ns_a, "lo"))]
        for step in steps:
            r = ip(*step)
            if r.returncode != 0:
                pytest.skip(f"cannot wire a veth pair here (ip {' '.join(step)}): "
                            f"{r.stderr.strip()}")
        yield ns_l, ns_a, f"{net}.1", f"{net}.2"
    finally:
        for ns in made:  # deleting a namespace deletes its end of the veth pair, and so the pair
            ip("netns", "del", ns)


def in_ns(ns: str, argv: list[str], log: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=REPO, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    with open(log, "w") as f:
        return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, *argv], cwd=REPO,
                                env=env, stdout=f, stderr=subprocess.STDOUT)


def test_actors_reach_the_learner_only_by_its_address(two_hosts):
    ns_l, ns_a, learner_addr, actor_addr = two_hosts
    # The two namespaces are separate hosts: the actors' side does not have the learner's address.
    assert learner_addr not in ip("-n", ns_a, "addr").stdout
    assert actor_addr not in ip("-n", ns_l, "addr").stdout
    with tempfile.TemporaryDirectory(prefix="fpac-multihost-") as d:
        learner = in_ns(ns_l, ["-m", "learner.cli", *RUN, *LEARNER, "--bind",
                               f"tcp://{learner_addr}:{PORT}", "--run-dir", f"{d}/run"],
                        f"{d}/learner.log")
        actors = in_ns(ns_a, ["-m", "actors.cli", *RUN, "--n", "2", "--learner",
                              f"{learner_addr}:{PORT}"], f"{d}/actors.log")
        try:
            learner_rc = learner.wait(timeout=360)
            actors_rc = actors.wait(timeout=60)
        finally:
            for p in (learner, actors):
                if p.poll() is None:
                    p.kill()
                    p.wait()
        with open(f"{d}/learner.log") as f:
            learner_log = f.read()
        with open(f"{d}/actors.log") as f:
            actors_log = f.read()
    assert learner_rc == 0 and "run finished: " in learner_log, learner_log[-3000:]
    assert actors_rc == 0, actors_log[-3000:]
    table = actors_log.split("final per-actor stats:")[-1]
    steps = {int(a): int(s) for a, s in
             re.findall(r"^\s*actor\s+(\d+)\s+\w+\s+\d+\s+(\d+)", table, re.M)}
    assert sorted(steps) == [0, 1] and all(s > 0 for s in steps.values()), table
