"""The learner process's surroundings: its torch device (--gpus) and its stop signals."""
from __future__ import annotations

import logging
import signal
import threading
from typing import Any, Callable

import torch

from fpac_async.config import ConfigError

log = logging.getLogger(__name__)


def choose_device(gpus: int) -> torch.device:
    """--gpus 0 -> CPU; --gpus >= 1 -> cuda:0, or a ConfigError saying why CUDA is unusable."""
    if gpus <= 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"--gpus {gpus} needs CUDA, but torch.cuda.is_available() is False "
                          f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); "
                          f"use --gpus 0 to train on the CPU")
    if gpus > 1:
        log.warning("--gpus %d: the learner trains on one GPU (cuda:0); the others stay idle", gpus)
    return torch.device("cuda:0")


def install_stop_signals(request_stop: Callable[[int], None]) -> dict[int, Any]:
    """SIGTERM and SIGINT call request_stop(signum); returns the old handlers (none are set off
    the main thread: signal handlers can only be set there, and tests run learners in threads)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    old = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        old[sig] = signal.signal(sig, lambda signum, _frame: request_stop(signum))
    return old


def restore_signals(old: dict[int, Any]) -> None:
    for sig, handler in old.items():
        signal.signal(sig, handler)
