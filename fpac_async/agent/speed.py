"""The learner's speed settings (docs/GPU.md): how SAC updates run on the device.

LearnerConfig holds five strings, each 'auto' by default: compile ('none', 'compile',
'compile-cudagraphs', 'cudagraphs'), tf32, amp, channels_last and fused_adam ('on' / 'off').
`resolve_speed(cfg, device)` turns them into a `Speed` for the learner's device: 'auto' takes
CPU_DEFAULTS or CUDA_DEFAULTS; an option that needs CUDA, asked for on the CPU, is an error.

bf16 autocast (amp) runs on CUDA and on the CPU. On a CPU, amp 'auto' is on only where the CPU
multiplies bf16 natively (AMX tiles or AVX512-BF16, `cpu_bf16()`): elsewhere oneDNN emulates it
and it is slower than float32 (bench/results/learner.jsonl, AMD EPYC rows). `Speed.describe()`
names the path, and the learner logs it.

CUDA_DEFAULTS are the learner's behaviour before these settings existed (eager, fused Adam,
PyTorch's TF32 defaults): no CUDA line of the other paths has run yet (issue 13). The device
run of bench/gpu_suite.sh measures every path side by side; its fastest CORRECT path (the CUDA
tests pass, learning unchanged) is what these defaults should then become.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Union

import torch

from fpac_async.agent.update_modes import COMPILE_MODES

SWITCHES = ("tf32", "amp", "channels_last", "fused_adam")
CPU_DEFAULTS = {"compile": "none", "tf32": "off", "amp": "off", "channels_last": "off",
                "fused_adam": "off"}
CUDA_DEFAULTS = {"compile": "none", "tf32": "off", "amp": "off", "channels_last": "off",
                 "fused_adam": "on"}
_CUDA_ONLY = {"tf32": "TF32 matmuls", "fused_adam": "fused Adam",
              "compile": "CUDA graph capture"}


def cpu_bf16() -> str:
    """The CPU's native bf16 matrix units: 'amx' (AMX tiles), 'avx512_bf16', or '' (none: bf16
    is emulated in float32 registers)."""
    if torch.cpu._is_amx_tile_supported():  # noqa: SLF001 - torch's own CPU feature probes
        return "amx"
    if torch.cpu._is_avx512_bf16_supported():  # noqa: SLF001
        return "avx512_bf16"
    return ""


def cpu_defaults() -> dict[str, str]:
    """CPU_DEFAULTS with amp on where the CPU has native bf16 (cpu_bf16())."""
    return {**CPU_DEFAULTS, "amp": "on" if cpu_bf16() else "off"}


@dataclass(frozen=True)
class Speed:
    """Resolved speed settings for one device."""

    compile: str
    tf32: bool
    amp: bool
    channels_last: bool
    fused_adam: bool
    device: str = "cpu"

    def describe(self) -> str:
        """E.g. 'updates: none, amp (bf16 autocast on amx)' or 'updates: none, float32 (CPU
        without native bf16)'."""
        on = [k for k in SWITCHES if getattr(self, k)]
        text = f"updates: {self.compile}" + (f", {', '.join(on)}" if on else "")
        if self.device != "cpu":
            return text
        units = cpu_bf16()
        if self.amp:
            return text + f" (bf16 autocast, CPU bf16 units: {units or 'none, emulated'})"
        return text + f" (float32; CPU bf16 units: {units or 'none'})"

    def sac_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of fpac_async.agent.sac.SAC."""
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
    defaults = CUDA_DEFAULTS if cuda else cpu_defaults()
    values = {k: defaults[k] if getattr(cfg, k) == "auto" else getattr(cfg, k)
              for k in ("compile", *SWITCHES)}
    if not cuda:
        for name, what in _CUDA_ONLY.items():
            if (name == "compile" and values[name] in ("cudagraphs", "compile-cudagraphs")) \
                    or (name != "compile" and values[name] == "on"):
                raise ValueError(f"learner.{name}={values[name]}: {what} needs a CUDA device "
                                 f"(the learner runs on {device}); use --gpus 1 on a GPU "
                                 f"machine or leave it at auto")
    return Speed(compile=values["compile"], device=torch.device(device).type,
                 **{k: values[k] == "on" for k in SWITCHES})


def apply_tf32(on: bool) -> None:
    """TF32 for CUDA matmuls and convolutions (process-wide), or full float32."""
    torch.backends.cuda.matmul.allow_tf32 = bool(on)
    torch.backends.cudnn.allow_tf32 = bool(on)


def speed_row(speed: Speed) -> dict[str, Any]:
    return asdict(speed)
