"""Speed settings (fpac_async/agent/speed.py): 'auto' per device, CUDA-only options refused on the CPU
with a clear error, bad choices refused by config.resolve."""
from __future__ import annotations

import dataclasses

import pytest

from fpac_async.config import ConfigError, LearnerConfig, RunConfig, resolve
from fpac_async.agent.speed import CPU_DEFAULTS, CUDA_DEFAULTS, resolve_speed


def test_auto_takes_each_devices_defaults() -> None:
    cfg = LearnerConfig()
    cpu, cuda = resolve_speed(cfg, "cpu"), resolve_speed(cfg, "cuda")
    assert cpu.compile == CPU_DEFAULTS["compile"] and cuda.compile == CUDA_DEFAULTS["compile"]
    assert cpu.fused_adam is False and cuda.fused_adam is (CUDA_DEFAULTS["fused_adam"] == "on")


def test_explicit_values_win_over_auto() -> None:
    cfg = LearnerConfig(compile="compile", channels_last="on", fused_adam="off", amp="on",
                        tf32="on")
    s = resolve_speed(cfg, "cuda")
    assert (s.compile, s.channels_last, s.fused_adam, s.amp, s.tf32) == (
        "compile", True, False, True, True)
    assert s.sac_kwargs() == {"amp": True, "channels_last": True, "fused_adam": False,
                              "compile_mode": "compile"}
    assert resolve_speed(LearnerConfig(compile="compile"), "cpu").compile == "compile"


@pytest.mark.parametrize("field,value", [("compile", "cudagraphs"),
                                         ("fused_adam", "on"), ("tf32", "on"),
                                         ("compile", "compile-cudagraphs")])
def test_cuda_only_options_are_refused_on_the_cpu(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"learner.{field}={value}: .* needs a CUDA device"):
        resolve_speed(dataclasses.replace(LearnerConfig(), **{field: value}), "cpu")


@pytest.mark.parametrize("field,value", [("compile", "jit"), ("tf32", "yes")])
def test_bad_choices_are_config_errors(field: str, value: str) -> None:
    cfg = RunConfig(learner=dataclasses.replace(LearnerConfig(), **{field: value}))
    with pytest.raises(ConfigError, match=f"learner.{field} must be"):
        resolve(cfg)
