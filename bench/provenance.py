"""Where a benchmark figure came from: commit, machine, versions (stamped into bench/results rows)."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
        return round(kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, timeout=10)
        # Code changes only: results files written by earlier benchmarks do not count.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":!bench/results"],
                               cwd=ROOT, text=True, capture_output=True, timeout=10).stdout
        return (out.stdout.strip() or "unknown") + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance() -> dict[str, Any]:
    """Commit, date, machine (CPU model, cores, memory, GPU), load and the versions that matter."""
    gpu = None
    try:
        import torch  # noqa: PLC0415

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    try:
        import zmq  # noqa: PLC0415

        libzmq = zmq.zmq_version()
    except ImportError:
        libzmq = None
    return {"commit": _commit(), "date": datetime.datetime.now().astimezone().isoformat(),
            "machine": {"host": platform.node(), "cpu": _cpu_model(), "cores": os.cpu_count(),
                        "mem_gib": _mem_gib(), "gpu": gpu},
            "load_avg_1m": os.getloadavg()[0], "python": platform.python_version(),
            "versions": {"torch": _version("torch"), "mujoco": _version("mujoco"),
                         "dm_control": _version("dm_control"), "envpool": _version("envpool"),
                         "libzmq": libzmq, "pyzmq": _version("pyzmq")},
            **_shared()}


def _shared() -> dict[str, bool]:
    """FPAC_MACHINE_SHARED=1 (other jobs running) or 0 (quiet) marks the row; unset: no claim.
    bench/readme_table.py never shows a shared row's speed as a clean figure."""
    flag = os.environ.get("FPAC_MACHINE_SHARED")
    return {} if flag is None else {"machine_shared": flag == "1"}


def append_row(path: str, row: dict[str, Any]) -> None:
    """One JSON line appended to a results file (its folder made), and where it went."""
    import json  # noqa: PLC0415
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"recorded in {os.path.relpath(path, ROOT)}")
