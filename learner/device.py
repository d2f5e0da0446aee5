"""The learner's torch device from --gpus (moved out of learner/service.py, issue 20)."""
from __future__ import annotations

import logging

import torch

from fpac_async.config import ConfigError

log = logging.getLogger("learner.service")


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
