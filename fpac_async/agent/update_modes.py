"""How `SAC.step` is run: eagerly, compiled, or captured once and replayed as CUDA graphs.

`make_update_runner(step, mode, device)` returns `run(batch, actor_step, target_step) -> metrics`:

- 'none': `step` itself (eager PyTorch).
- 'compile': `torch.compile(step)` (inductor; one graph per (actor_step, target_step) pattern,
  with graph breaks at the backward calls). Same update as eager, up to float reassociation.
- 'compile-cudagraphs': `torch.compile(step, mode="reduce-overhead")` (inductor plus its own
  CUDA graph trees; on CPU the same as 'compile'), metrics cloned out per call.
- 'cudagraphs': `GraphedStep`: the WHOLE update (forward, backward, the three Adam steps and the
  Polyak step) captured with torch.cuda.graph and replayed, one launch per update instead of
  hundreds. The batch is copied into static input buffers first; the metrics are packed into one
  static tensor inside the graph and cloned out after each replay (the trainer keeps a chunk's
  metrics until it averages them). On CPU the same static-buffer path runs without capture,
  which is what the CPU tests check against the eager step.

Why whole-update capture is safe here: `SAC.step` has fixed shapes, no host-device sync and no
Python state changes (the update counter lives in `SAC.update`); its branches (actor step,
Polyak step) are Python bools, so each pattern gets its own graph (at most 4). Adam is
capturable (state and lr as device tensors; SAC.set_lr writes the lr in place), autocast runs
with cache_enabled=False, random draws come from the CUDA generator (graph-safe philox).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

from fpac_async.agent.batch import Batch

COMPILE_MODES = ("none", "compile", "compile-cudagraphs", "cudagraphs")
WARMUP_CALLS = 2
"""Eager calls per (actor_step, target_step) pattern before its capture (Adam's lazy state,
cuDNN's algorithm choice and autograd's streams are set up outside the graph, as the PyTorch
CUDA-graphs notes require)."""

Step = Callable[[Batch, bool, bool], Dict[str, Tensor]]
_FIELDS = ("obs", "action", "reward", "discount", "next_obs", "cam", "next_cam", "state",
           "next_state")


def check_compile_mode(mode: str) -> None:
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}; got {mode!r}")


def make_update_runner(step: Step, mode: str, device: Union[str, torch.device]) -> Step:
    """`step` run as `mode` says (module docstring)."""
    check_compile_mode(mode)
    if mode == "none":
        return step
    if mode == "compile":
        return torch.compile(step)
    if mode == "compile-cudagraphs":
        return _TreeStep(torch.compile(step, mode="reduce-overhead"))
    return GraphedStep(step, torch.device(device))


class _TreeStep:
    """A reduce-overhead compiled step: each call starts a new CUDA-graph-tree iteration, and its
    metrics are cloned out (the trees overwrite their outputs on the next replay, and the
    trainer keeps a chunk's metrics until it averages them)."""

    def __init__(self, compiled: Step):
        self.compiled = compiled

    def __call__(self, batch: Batch, actor_step: bool, target_step: bool) -> Dict[str, Tensor]:
        torch.compiler.cudagraph_mark_step_begin()
        packed, keys = _pack(self.compiled(batch, actor_step, target_step))
        return _unpack(packed.clone(), keys)


class GraphedStep:
    """`step` on static input buffers, captured as one CUDA graph per branch pattern (CUDA) or
    run on the same buffers without capture (CPU: the device-independent part, tested there)."""

    def __init__(self, step: Step, device: torch.device, capture: Optional[bool] = None,
                 warmup_calls: int = WARMUP_CALLS):
        self.step = step
        self.device = device
        self.capture = (device.type == "cuda") if capture is None else bool(capture)
        if self.capture and device.type != "cuda":
            raise ValueError("CUDA graph capture needs a CUDA device")
        self.warmup_calls = int(warmup_calls)
        self._static: Optional[Batch] = None
        self._shapes: Optional[Tuple] = None
        self._calls: Dict[Tuple[bool, bool], int] = {}
        self._graphs: Dict[Tuple[bool, bool], Tuple[torch.cuda.CUDAGraph, Tensor, List[str]]] = {}
        self._side = torch.cuda.Stream(device) if self.capture else None

    # ------------------------------------------------------------------ static inputs
    def _load(self, batch: Batch) -> Batch:
        """Copy `batch` into the static buffers (made from the first batch; a batch of other
        shapes drops the buffers and the graphs that read them)."""
        shapes = tuple(None if t is None else (tuple(t.shape), t.dtype)
                       for t in (getattr(batch, f) for f in _FIELDS))
        if shapes != self._shapes:
            self._static = Batch(**{f: None if t is None else torch.empty_like(
                t, device=self.device, memory_format=torch.contiguous_format)
                for f, t in ((f, getattr(batch, f)) for f in _FIELDS)})
            self._shapes, self._graphs, self._calls = shapes, {}, {}
        assert self._static is not None
        for f in _FIELDS:
            src = getattr(batch, f)
            if src is not None:
                getattr(self._static, f).copy_(src, non_blocking=True)
        return self._static

    # ------------------------------------------------------------------------ running
    def __call__(self, batch: Batch, actor_step: bool, target_step: bool) -> Dict[str, Tensor]:
        static = self._load(batch)
        key = (bool(actor_step), bool(target_step))
        if key in self._graphs:
            graph, packed, keys = self._graphs[key]
            graph.replay()
            return _unpack(packed.clone(), keys)
        calls = self._calls.get(key, 0)
        self._calls[key] = calls + 1
        if not self.capture or calls < self.warmup_calls:
            return self._eager(static, key)
        return self._capture_and_replay(static, key)

    def _eager(self, static: Batch, key: Tuple[bool, bool]) -> Dict[str, Tensor]:
        """One real update on the static buffers, packed and unpacked as a replay would be (on
        CUDA on a side stream, as warm-up before capture must be)."""
        if self._side is None:
            metrics = self.step(static, *key)
            return _unpack(*_pack(metrics))
        current = torch.cuda.current_stream(self.device)
        self._side.wait_stream(current)
        with torch.cuda.stream(self._side):
            packed, keys = _pack(self.step(static, *key))
        current.wait_stream(self._side)
        packed.record_stream(current)
        return _unpack(packed, keys)

    def _capture_and_replay(self, static: Batch, key: Tuple[bool, bool]) -> Dict[str, Tensor]:
        """Capture one update (capture runs nothing), then replay it: this call's update."""
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            packed, keys = _pack(self.step(static, *key))
        self._graphs[key] = (graph, packed, keys)
        graph.replay()
        return _unpack(packed.clone(), keys)


def _pack(metrics: Dict[str, Tensor]) -> Tuple[Tensor, List[str]]:
    """The 0-d metrics as one float32 vector (one clone per update instead of one per metric)."""
    keys = list(metrics)
    return torch.stack([metrics[k].detach().float() for k in keys]), keys


def _unpack(packed: Tensor, keys: List[str]) -> Dict[str, Tensor]:
    return dict(zip(keys, packed.unbind(0)))
