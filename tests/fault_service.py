"""A real learner (`python -m learner.cli`) and real actors (`python -m actors.cli`) on loopback,
on the CPU, with a tiny point_reach agent: the process shell of the fault-injection tests
(tests/test_fault_*.py). Waits poll conditions read from metrics.jsonl and the logs, with
generous timeouts (a loaded 2-core CI machine), never fixed sleeps."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Callable

from fpac_async.wire.transport import free_port_pair

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small networks, a short random phase and a low replay ratio: the CPU learner keeps up, so
# records flow; only the final evaluation runs, of two 50-step episodes.
TINY = ["--task", "point_reach", "--seed", "0", "--num-points", "4", "--hidden-dim", "32",
        "--conv-channels", "8", "--batch-size", "16", "--initial-random-steps", "100",
        "--replay-ratio", "0.25", "--capacity", "3000", "--eval-every-env-steps", "1000000",
        "--eval-episodes", "2", "--log-every-s", "0.5", "--weights-every", "20"]
ACTOR_FLAGS = ["--task", "point_reach", "--seed", "0", "--eval-episodes", "2"]
STARTED = re.compile(r"(actor|evaluator) (\d+): started pid (\d+)")


class FaultService:
    """One learner and one fpac-actors supervisor, both real processes; logs in run_dir."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        os.makedirs(run_dir, exist_ok=True)
        self.port = free_port_pair()
        self.learner: subprocess.Popen | None = None
        self.actors: subprocess.Popen | None = None
        self._procs: list[subprocess.Popen] = []
        self.learner_starts = 0

    # ------------------------------------------------------------------ processes
    def _env(self, extra: dict | None = None) -> dict:
        env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1", **(extra or {})}
        env.setdefault("MUJOCO_GL", "egl")
        return env

    def start_learner(self, args: list[str], resume: bool = False,
                      env: dict | None = None) -> subprocess.Popen:
        self.learner_starts += 1
        out = open(self.learner_log(self.learner_starts), "w")  # noqa: SIM115 (closed by the OS)
        cmd = [sys.executable, "-m", "learner.cli", "--run-dir", self.run_dir,
               *(["--resume"] if resume else
                 ["--gpus", "0", "--bind", f"tcp://127.0.0.1:{self.port}", *TINY]), *args]
        self.learner = subprocess.Popen(cmd, cwd=REPO, env=self._env(env), stdout=out,
                                        stderr=subprocess.STDOUT)
        self._procs.append(self.learner)
        return self.learner

    def start_actors(self, n: int, args: list[str] = ()) -> subprocess.Popen:
        out = open(self.actors_log(), "w")  # noqa: SIM115
        cmd = [sys.executable, "-m", "actors.cli", "--n", str(n), "--evaluator",
               "--learner", f"127.0.0.1:{self.port}", *ACTOR_FLAGS, *args]
        self.actors = subprocess.Popen(cmd, cwd=REPO, env=self._env(), stdout=out,
                                       stderr=subprocess.STDOUT)
        self._procs.append(self.actors)
        return self.actors

    def close(self) -> None:
        """SIGINT/SIGTERM what is still running, then SIGKILL (never leave processes behind)."""
        for p in self._procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
                p.send_signal(signal.SIGINT if p is self.actors else signal.SIGTERM)
        for p in self._procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    # ------------------------------------------------------------------ what they wrote
    def learner_log(self, start: int) -> str:
        return os.path.join(self.run_dir, f"learner-{start}.out")

    def actors_log(self) -> str:
        return os.path.join(self.run_dir, "actors.out")

    def text(self, path: str) -> str:
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def rows(self) -> list[dict]:
        """metrics.jsonl rows (a torn last line skipped)."""
        out = []
        for line in self.text(os.path.join(self.run_dir, "metrics.jsonl")).splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def last(self, key: str, default: float = 0) -> float:
        rows = [r for r in self.rows() if r.get(key) is not None]
        return rows[-1][key] if rows else default

    def started(self) -> list[tuple[str, int]]:
        """(role+id, pid) for every child the supervisor started, in order."""
        return [(f"{m.group(1)}{m.group(2)}", int(m.group(3)))
                for m in STARTED.finditer(self.text(self.actors_log()))]

    def pid_of(self, name: str) -> int | None:
        pids = [pid for n, pid in self.started() if n == name]
        return pids[-1] if pids else None

    def report(self) -> str:
        """The tails of the logs, for assertion messages."""
        logs = [self.learner_log(i + 1) for i in range(self.learner_starts)] + [self.actors_log()]
        return "\n".join(f"--- {os.path.basename(p)}\n{self.text(p)[-2500:]}" for p in logs)

    # ------------------------------------------------------------------ waiting
    def wait_for(self, condition: Callable[[], bool], what: str, timeout_s: float = 120.0,
                 alive: tuple[subprocess.Popen | None, ...] = ()) -> None:
        """Poll `condition`; fail naming `what` (with the logs) on timeout or if a process in
        `alive` exits meanwhile."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            for p in alive:
                assert p is None or p.poll() is None, (
                    f"a process exited (code {p.returncode}) while waiting for {what}\n"
                    + self.report())
            assert time.monotonic() < deadline, (f"timed out after {timeout_s:.0f} s waiting "
                                                 f"for {what}\n" + self.report())
            time.sleep(0.1)

    def wait_exit(self, p: subprocess.Popen, what: str, timeout_s: float = 180.0) -> int:
        try:
            return p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{what} did not exit within {timeout_s:.0f} s\n"
                                 + self.report()) from None


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
