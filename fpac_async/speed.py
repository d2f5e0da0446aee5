"""The learner's speed settings (docs/GPU.md): how SAC updates run on the device.

LearnerConfig holds five strings, each 'auto' by default: compile ('none', 'compile',
'compile-cudagraphs', 'cudagraphs'), tf32, amp, channels_last and fused_adam ('on' / 'off').
`resolve_speed(cfg, device)` turns them into a `Speed` for the learner's device: 'auto' takes
CPU_DEFAULTS or CUDA_DEFAULTS; an option that needs CUDA, asked for on the CPU, is an error.

CUDA_DEFAULTS are the learner's behaviour before these settings existed (eager, fused Adam,
PyTorch's TF32 defaults): no CUDA line of the other paths has run yet (issue 13). The device
run of bench/gpu_suite.sh measures every path side by side; its fastest CORRECT path (the CUDA
tests pass, learning unchanged) is what these defaults should then become.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Union

import torch

from fpac_async.update_modes import COMPILE_MODES

SWITCHES = ("tf32", "amp", "channels_last", "fused_adam")
CPU_DEFAULTS = {"compile": "none", "tf32": "off", "amp": "off", "channels_last": "off",
                "fused_adam": "off"}
CUDA_DEFAULTS = {"compile": "none", "tf32": "off", "amp": "off", "channels_last": "off",
                 "fused_adam": "on"}
_CUDA_ONLY = {"tf32": "TF32 matmuls", "amp": "bf16 autocast", "fused_adam": "fused Adam",
              "compile": "CUDA graph capture"}


@dataclass(frozen=True)
class Speed:
    """Resolved speed settings for one device."""

    compile: str
    tf32: bool
    amp: bool
    channels_last: bool
    fused_adam: bool

    def describe(self) -> str:
        on = [k for k in SWITCHES if getattr(self, k)]
        return f"updates: {self.compile}" + (f", {', '.join(on)}" if on else "")

    def sac_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of fpac_async.sac.SAC."""
        return {"amp": self.amp, "channels_last": self.channels_last,
                "fused_adam": self.fused_adam, "compile_mode": self.compile}


def check_speed_choices(cfg: Any) -> None:
    """Raise ValueError for a value outside the choices (config.resolve calls it)."""
    if cfg.compile not in ("auto", *COMPILE_MODES):
        raise ValueError(f"learner.compile must be one of auto, {', '.join(COMPILE_MODES)}; "
                         f"got {cfg.compile!r}")
    for name in SWITCHES:
        if getattr(cfg, name) not in ("auto", "on", "off"):
            raise ValueError(f"learner.{name} must be auto, on or off; got "
                             f"{getattr(cfg, name)!r}")


def resolve_speed(cfg: Any, device: Union[str, torch.device]) -> Speed:
    """The Speed for `device` from a LearnerConfig's strings ('auto' -> the device's default)."""
    check_speed_choices(cfg)
    cuda = torch.device(device).type == "cuda"
    defaults = CUDA_DEFAULTS if cuda else CPU_DEFAULTS
    values = {k: defaults[k] if getattr(cfg, k) == "auto" else getattr(cfg, k)
              for k in ("compile", *SWITCHES)}
    if not cuda:
        for name, what in _CUDA_ONLY.items():
            if (name == "compile" and values[name] in ("cudagraphs", "compile-cudagraphs")) \
                    or (name != "compile" and values[name] == "on"):
                raise ValueError(f"learner.{name}={values[name]}: {what} needs a CUDA device "
                                 f"(the learner runs on {device}); use --gpus 1 on a GPU "
                                 f"machine or leave it at auto")
    return Speed(compile=values["compile"],
                 **{k: values[k] == "on" for k in SWITCHES})


def apply_tf32(on: bool) -> None:
    """TF32 for CUDA matmuls and convolutions (process-wide), or full float32."""
    torch.backends.cuda.matmul.allow_tf32 = bool(on)
    torch.backends.cudnn.allow_tf32 = bool(on)


def speed_row(speed: Speed) -> dict[str, Any]:
    return asdict(speed)
