"""TorchScript policy export and the flat weights payload (DESIGN.md section 3).

The learner sends actors a TorchScript `PolicyModule` (code + weights) once, then refreshes the
weights as one flat float32 array with a (name, shape) layout: actors never unpickle anything
and never import the project to run the policy.

Weights order: the module's `state_dict()` order, floating-point parameters and buffers only
(integer buffers, if any, are not part of the payload). A module exported from the same SAC
config always has the same layout, so a layout check at load time catches a mismatched config.
"""

import contextlib
import copy
import io
import warnings
from typing import Final, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

Layout = List[Tuple[str, Tuple[int, ...]]]


class PolicyModule(nn.Module):
    """The inference path encoder -> actor: uint8 observations to actions f32 [N, A] in (-1, 1).

    `points` / `act_from_points` let an actor keep the previous frame's points and run the conv
    trunk on the new frame only (fpac encoder). For the other encoders they raise at call time
    (the methods still compile: `has_points` is a constant, so TorchScript drops the dead branch).
    """

    has_points: Final[bool]

    def __init__(self, encoder: nn.Module, actor: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.actor = actor
        self.has_points = hasattr(encoder, "points") and hasattr(encoder, "state_from_points")

    def forward(self, obs: Tensor, deterministic: bool = True, cam: Optional[Tensor] = None,
                state: Optional[Tensor] = None) -> Tensor:
        """Actions [N, A] of observations uint8 [N, 3S, H, W] (oldest frame first): tanh(mean) by
        default, as users evaluate a policy (`policy(obs)`); deterministic=False samples
        tanh(mean + std * eps), the actors' exploration path."""
        return self.actor.act(self.encoder(obs, cam, state), deterministic)

    @torch.jit.export
    def points(self, frames: Tensor) -> Tensor:
        """Feature points [N, K, P] of single frames uint8 [N, 3, H, W] (fpac encoder only)."""
        if self.has_points:
            return self.encoder.points(frames)
        raise RuntimeError("points() needs the fpac encoder; this policy's encoder has no points")

    @torch.jit.export
    def act_from_points(self, x_t: Tensor, x_prev: Tensor, deterministic: bool,
                        cam: Optional[Tensor] = None) -> Tensor:
        """Actions [N, A] from the points of o_t and o_{t-1} (equal to forward on the stack)."""
        if self.has_points:
            return self.actor.act(self.encoder.state_from_points(x_t, x_prev, cam), deterministic)
        raise RuntimeError("act_from_points() needs the fpac encoder; this policy's encoder "
                           "has no points")


def policy_module(sac) -> PolicyModule:
    """An eager CPU float32 copy of the SAC's online encoder and actor (sac is unchanged)."""
    encoder = copy.deepcopy(sac.encoder).to("cpu", torch.float32)
    encoder = encoder.to(memory_format=torch.contiguous_format)
    actor = copy.deepcopy(sac.actor).to("cpu", torch.float32)
    module = PolicyModule(encoder, actor).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    """Silence torch's TorchScript deprecation warnings (torch >= 2.10): the design deliberately
    ships TorchScript, which actors load without the project (see the module docstring)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated",
                                category=DeprecationWarning)
        yield


def export_policy(sac) -> torch.jit.ScriptModule:
    """The SAC's current policy as a TorchScript module on the CPU."""
    with _quiet_jit():
        return torch.jit.script(policy_module(sac))


def script_to_bytes(module: torch.jit.ScriptModule) -> bytes:
    buffer = io.BytesIO()
    with _quiet_jit():
        torch.jit.save(module, buffer)
    return buffer.getvalue()


def script_from_bytes(data: bytes) -> torch.jit.ScriptModule:
    """Load a TorchScript module from bytes onto the CPU (no pickle of project classes)."""
    with _quiet_jit():
        return torch.jit.load(io.BytesIO(data), map_location="cpu")


def _floating_entries(module: nn.Module) -> List[Tuple[str, Tensor]]:
    return [(name, t) for name, t in module.state_dict().items() if t.is_floating_point()]


def flat_weights(module: nn.Module) -> Tuple[np.ndarray, Layout]:
    """All floating params and buffers as one float32 1-D array, and its (name, shape) layout."""
    entries = _floating_entries(module)
    layout: Layout = [(name, tuple(int(s) for s in t.shape)) for name, t in entries]
    if not entries:
        return np.zeros(0, dtype=np.float32), layout
    with torch.no_grad():
        flat = torch.cat([t.detach().reshape(-1).to("cpu", torch.float32) for _, t in entries])
    return flat.numpy(), layout


def load_flat_weights(module: nn.Module, flat: np.ndarray,
                      layout: Sequence[Tuple[str, Sequence[int]]]) -> None:
    """Copy a flat_weights payload into `module` in place, after checking that the layout (names,
    shapes, order, total size) is exactly the module's. Raises ValueError on any mismatch."""
    entries = _floating_entries(module)
    flat = np.asarray(flat)
    if flat.dtype != np.float32 or flat.ndim != 1:
        raise ValueError(f"flat weights must be a 1-D float32 array; got {flat.dtype} "
                         f"with shape {flat.shape}")
    if len(layout) != len(entries):
        raise ValueError(f"weights layout has {len(layout)} tensors; the module has "
                         f"{len(entries)}")
    total = 0
    for (name, shape), (own_name, tensor) in zip(layout, entries):
        shape = tuple(int(s) for s in shape)
        if name != own_name or shape != tuple(tensor.shape):
            raise ValueError(f"weights layout entry {name!r} {shape} does not match the "
                             f"module's {own_name!r} {tuple(tensor.shape)}")
        total += int(np.prod(shape, dtype=np.int64))
    if total != flat.size:
        raise ValueError(f"flat weights hold {flat.size} numbers; the layout needs {total}")
    source = torch.from_numpy(flat)
    offset = 0
    with torch.no_grad():
        for _, tensor in entries:
            n = tensor.numel()
            tensor.copy_(source[offset:offset + n].view(tensor.shape))
            offset += n
