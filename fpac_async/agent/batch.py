"""The SAC training batch: a dataclass of tensors (docs/INTERFACES.md, "Observations and batches").

`Batch` is what the learner's replay hands to `SAC.update`. It holds tensors only (no numpy, no
Python scalars), so moving it to the GPU is one `non_blocking` copy per field from pinned memory.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import Tensor


@dataclass
class Batch:
    """B transitions (s, a, r, s'), s = stack(o_{t-1}, o_t), s' = stack(o_t, o_{t+1}).

    obs / next_obs: uint8 [B, 3S, H, W], channels [0:3] the oldest frame, [-3:] the newest; or
    EMPTY uint8 [B, 0, H, W] when the replay stores no frames (an encoder that needs no pixels,
    i.e. `state`: then state / next_state are required).
    action f32 [B, A] in [-1, 1]; reward f32 [B]; discount f32 [B] (0 at a termination, 1
    otherwise; gamma is applied inside SAC). cam / next_cam f32 [B, 2]: the camera's pixel motion
    between the two frames of obs / next_obs (both or neither). state / next_state f32 [B, D]: DMC
    low-dimensional state for the 'state' encoder (both or neither).

    SAC relies on the frames overlapping: next_obs's frames [0:3S-3] are obs's frames [3:]
    (the replay builds both stacks from one frame sequence). `validate(check_overlap=True)`
    verifies it (a device sync: tests and debugging only).
    """

    obs: Tensor
    action: Tensor
    reward: Tensor
    discount: Tensor
    next_obs: Tensor
    cam: Optional[Tensor] = None
    next_cam: Optional[Tensor] = None
    state: Optional[Tensor] = None
    next_state: Optional[Tensor] = None

    @property
    def batch_size(self) -> int:
        return int(self.obs.shape[0])

    def to(self, device: Union[str, torch.device], non_blocking: bool = False) -> "Batch":
        """A copy of the batch on `device` (fields already there are not copied)."""
        moved = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            moved[f.name] = None if value is None else value.to(device, non_blocking=non_blocking)
        return Batch(**moved)

    def validate(self, check_overlap: bool = False) -> None:
        """Raise ValueError naming the first field whose shape or dtype breaks the contract."""
        if self.obs.dim() != 4 or self.obs.shape[1] % 3 != 0:
            raise ValueError(f"obs must be [B, 3S, H, W]; got shape {tuple(self.obs.shape)}")
        b = self.obs.shape[0]
        _expect("obs", self.obs, torch.uint8, tuple(self.obs.shape))
        _expect("next_obs", self.next_obs, torch.uint8, tuple(self.obs.shape))
        if self.obs.shape[1] == 0 and self.state is None:
            raise ValueError("obs has no frames (0 channels): state and next_state are required")
        if self.action.dim() != 2:
            raise ValueError(f"action must be [B, A]; got shape {tuple(self.action.shape)}")
        _expect("action", self.action, torch.float32, (b, self.action.shape[1]))
        _expect("reward", self.reward, torch.float32, (b,))
        _expect("discount", self.discount, torch.float32, (b,))
        _pair("cam", self.cam, "next_cam", self.next_cam, b, 2)
        dim = None if self.state is None or self.state.dim() != 2 else self.state.shape[1]
        _pair("state", self.state, "next_state", self.next_state, b, dim)
        if check_overlap and not torch.equal(self.obs[:, 3:], self.next_obs[:, :-3]):
            raise ValueError("next_obs's older frames must equal obs's newer frames")


def _expect(name: str, t: Tensor, dtype: torch.dtype, shape: tuple) -> None:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    if t.dtype != dtype:
        raise ValueError(f"{name} must be {dtype}; got {t.dtype}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {tuple(t.shape)}")


def _pair(name: str, a: Optional[Tensor], next_name: str, b: Optional[Tensor],
          batch: int, dim: Optional[int]) -> None:
    """Optional fields come in (current, next) pairs of f32 [B, dim]."""
    if (a is None) != (b is None):
        raise ValueError(f"{name} and {next_name} must both be given or both be None")
    if a is None:
        return
    if dim is None:
        raise ValueError(f"{name} must be [B, D]; got shape {tuple(a.shape)}")
    _expect(name, a, torch.float32, (batch, dim))
    _expect(next_name, b, torch.float32, (batch, dim))
