"""Issue 20 "Silent waits" and issue 21's honest ETA, on the real processes.

- fpac-actors facing an address where nothing answers says so, naming HOST:PORT and the causes.
- fpac-learner logs that it waits for actors on its addresses until the first hello, then prints
  fpac-train's progress line (percent, budget, ETA) with the actor counted.
- Actors blocked by backpressure still count in the `actors` column.
- The ETA comes from the update rate after the random phase, not the random phase's step rate.
Every wait is on an output line or a condition, with a generous deadline (busy machines).
"""
from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time

import numpy as np
import zmq

from fpac_async.wire import protocol as P
from fpac_async.wire.transport import free_port_pair, pull_socket, push_socket
from learner.progress import Progress
from learner.receiver import Receiver, TaskShapes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Lines:
    """A process whose stdout and stderr lines are read in threads, to wait for one."""

    def __init__(self, module: str, args: list[str]) -> None:
        env = {**os.environ, "MUJOCO_GL": "egl", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self.seen: list[tuple[str, str]] = []
        for name, stream in (("out", self.proc.stdout), ("err", self.proc.stderr)):
            threading.Thread(target=self._read, args=(name, stream), daemon=True).start()

    def _read(self, name: str, stream) -> None:
        for line in stream:
            self.lines.put((name, line.rstrip("\n")))

    def wait_for(self, pattern: str, timeout_s: float, stream: str | None = None) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                name, line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append((name, line))
            if (stream is None or name == stream) and re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} within {timeout_s} s; got:\n"
                             + "\n".join(f"{n}: {ln}" for n, ln in self.seen[-30:]))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


def test_actors_facing_a_silent_address_name_it():
    port = free_port_pair()  # nothing listens there
    actors = Lines("actors.cli", ["--n", "1", "--task", "point_reach", "--learner",
                                  f"127.0.0.1:{port}", "--no-reply-warn-s", "1"])
    try:
        line = actors.wait_for("no reply from the learner", timeout_s=60, stream="err")
    finally:
        actors.stop()
    assert f"127.0.0.1:{port}" in line
    assert "no learner is running" in line and "--bind" in line and "--auth" in line


def test_the_learner_says_it_waits_then_prints_the_progress_line(tmp_path):
    port = free_port_pair()
    learner = Lines("learner.cli", ["--task", "point_reach", "--gpus", "0", "--bind",
                                    f"tcp://127.0.0.1:{port}", "--run-dir", str(tmp_path / "r"),
                                    "--log-every-s", "0.5", "--env-steps", "100000"])
    actors = None
    try:
        line = learner.wait_for("waiting for actors", timeout_s=60, stream="err")
        assert f"tcp://127.0.0.1:{port}" in line and f"tcp://127.0.0.1:{port + 2}" in line
        assert f"--learner 127.0.0.1:{port}" in line
        actors = Lines("actors.cli", ["--n", "1", "--task", "point_reach", "--learner",
                                      f"127.0.0.1:{port}"])
        learner.wait_for("first hello after", timeout_s=90, stream="err")
        progress = learner.wait_for(r"^\[\s*\d+\.\d%\] .*/100\.0k env steps \|.*\| actors 1 \|",
                                    timeout_s=90, stream="out")
        assert re.search(r"\| eta (after the random phase|\d)", progress)
    finally:
        if actors is not None:
            actors.stop()
        learner.stop()


def _steps(actor: int, step0: int, n: int = 4) -> P.Message:
    return P.steps_message(actor, 0, step0 // n, step0, np.zeros((n, 3, 32, 32), np.uint8),
                           np.zeros((n, 2), np.float32), np.zeros(n, np.float32),
                           np.zeros(n, np.uint8), np.zeros(n, np.int32))


def test_actors_blocked_by_backpressure_count_as_connected():
    ctx = zmq.Context()
    port = free_port_pair()
    pull = pull_socket(ctx, f"tcp://127.0.0.1:{port}")
    push = push_socket(ctx, f"tcp://127.0.0.1:{port}")
    admit = threading.Event()
    admit.set()
    r = Receiver(pull, TaskShapes("point_reach", (3, 32, 32), 2, 4), lambda **kw: None,
                 lambda _: admit.is_set(), action_repeat=1, env_step_budget=10**9,
                 max_bytes=2**22)
    r.start()
    try:
        P_send = lambda m: push.send_multipart(P.encode(m), flags=zmq.NOBLOCK)  # noqa: E731
        deadline = time.monotonic() + 30
        while not push.poll(100, zmq.POLLOUT) and time.monotonic() < deadline:
            pass
        P_send(P.hello_message(7, "point_reach", 1, (3, 32, 32), 2))
        window = 0.5
        while r.actors(window) != {7} and time.monotonic() < deadline:
            time.sleep(0.01)
        assert r.actors(window) == {7}
        admit.clear()  # the learner falls behind: the receiver stops reading the data socket
        step, sent_after_pause = 0, 0
        while time.monotonic() < deadline and sent_after_pause < 200:
            try:
                P_send(_steps(7, step))
                step += 4
                if r._paused_at is not None:  # noqa: SLF001
                    sent_after_pause += 1
            except zmq.Again:  # the queues are full: the actor is blocked
                if r._paused_at is not None:  # noqa: SLF001
                    break
                time.sleep(0.01)
        paused_at = time.monotonic()
        while time.monotonic() < paused_at + 3 * window:  # well past the window: still counted
            assert r.actors(window) == {7}
            time.sleep(0.05)
    finally:
        r.stop()
        r.join(timeout=5)
        push.close(linger=0)
        pull.close(linger=0)
        ctx.term()


def test_the_eta_comes_from_the_update_rate_after_the_random_phase():
    p = Progress(100_000, replay_ratio=1.0, initial_random_steps=1000, action_repeat=4)
    random_row = {"env_steps": 2000, "agent_steps": 500, "sps": 1000.0, "updates": 0, "time": 0}
    assert p.eta(random_row) == "after the random phase"  # not 98k / 1000 sps = 1m38s
    # 24_000 updates owed at the budget (25_000 agent steps - 1000 random ones); 100 updates/s.
    rows = [{"env_steps": 4400 + 400 * k, "agent_steps": 1100 + 100 * k, "updates": 100 + 100 * k,
             "time": 100.0 + k, "sps": 400.0, "ups": 100.0 if k % 2 else 0.0} for k in range(5)]
    etas = [p.eta(row) for row in rows]
    assert etas[-1] == "3m55s"  # (24_000 - 500) / 100 per s = 235 s
    assert "-" not in etas  # a row whose window saw no update does not blank the ETA
    assert Progress(10_000).eta({"env_steps": 2500, "sps": 100.0}) == "1m15s"  # ratio 0: steps
