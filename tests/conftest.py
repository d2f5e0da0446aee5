"""The `device` fixture: tests that take it run on every device here (issue 15).

Devices: the comma list in FPAC_TEST_DEVICES if set (e.g. "cuda" in bench/gpu_suite.sh), else
"cpu" plus "cuda" when torch sees a GPU. Asking for CUDA where there is none is an error, not a
silent CPU run.
"""
from __future__ import annotations

import os
from typing import Iterator

import pytest
import torch


def test_devices() -> list[str]:
    wanted = os.environ.get("FPAC_TEST_DEVICES", "")
    devices = [d.strip() for d in wanted.split(",") if d.strip()] if wanted else (
        ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    bad = [d for d in devices if d not in ("cpu", "cuda")]
    if bad:
        raise pytest.UsageError(f"FPAC_TEST_DEVICES: unknown devices {bad} (cpu, cuda)")
    if "cuda" in devices and not torch.cuda.is_available():
        raise pytest.UsageError("FPAC_TEST_DEVICES asks for cuda but torch sees no GPU")
    return devices


test_devices.__test__ = False  # a helper, not a test


@pytest.fixture(params=test_devices())
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


@pytest.fixture
def cuda_device() -> torch.device:
    """For CUDA-only tests: skipped where there is no GPU."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device("cuda")


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for the test: a learner in this process beside its actors on two
    shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def service(tmp_path) -> Iterator[object]:
    """A FaultService (tests/fault_service.py) in a fresh directory: the fault-injection tests'
    learner, actors and their logs; every process it started is gone afterwards."""
    from fault_service import FaultService  # noqa: PLC0415
    s = FaultService(os.path.join(str(tmp_path), "run"))
    yield s
    s.close()
