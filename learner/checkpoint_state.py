"""What a checkpoint holds besides the agent's tensors, in a form torch.load(weights_only=True)
accepts: the random generators' states (capture_rng, restore_rng), numpy arrays and scalars as
raw bytes in uint8 tensors (to_safe, from_safe), and a digest of any such state (state_digest:
tests and DEBUG logs compare a replay before and after a resume with it). learner/checkpoint.py
writes and reads the file.
"""
from __future__ import annotations

import hashlib
import random
from typing import Any, Dict

import numpy as np
import torch

_NDARRAY = "__ndarray__"  # the key marking an encoded numpy array


# ---------------------------------------------------------------------------- RNG state
def capture_rng() -> Dict[str, Any]:
    """torch (CPU and every CUDA device), numpy global and python `random` generator states."""
    state: Dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Dict[str, Any]) -> None:
    """Restore what capture_rng saved; accepts the rng dict or a whole checkpoint holding one."""
    rng = state["rng"] if "rng" in state else state
    torch.set_rng_state(rng["torch"].cpu())
    np_state = rng["numpy"]
    np.random.set_state(tuple(np_state) if isinstance(np_state, list) else np_state)
    py = rng["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in rng["cuda"]])


# ------------------------------------------------------------- weights-only-safe encoding
def to_safe(obj: Any) -> Any:
    """Replace numpy arrays/scalars (which weights_only loading refuses) by safe types."""
    if isinstance(obj, np.ndarray):
        flat = np.ascontiguousarray(obj).reshape(-1)
        return {_NDARRAY: torch.from_numpy(flat.view(np.uint8)), "dtype": flat.dtype.str,
                "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: to_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_safe(v) for v in obj)
    return obj


def from_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        if _NDARRAY in obj:
            raw = obj[_NDARRAY].numpy()
            return raw.view(np.dtype(obj["dtype"])).reshape(obj["shape"])
        return {k: from_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(from_safe(v) for v in obj)
    return obj


def state_digest(obj: Any) -> str:
    """SHA-256 of a nested state (dicts by sorted key, lists, numpy arrays by dtype, shape and
    bytes, tensors as arrays, scalars by repr): two states are equal iff (barring collisions)
    their digests are. The learner logs its replay's at resume at DEBUG level (tests compare it)."""
    sha = hashlib.sha256()

    def walk(o: Any) -> None:
        if isinstance(o, torch.Tensor):
            o = o.detach().cpu().numpy()
        if isinstance(o, np.ndarray):
            a = np.ascontiguousarray(o)
            sha.update(f"nd{a.dtype.str}{a.shape}".encode())
            sha.update(a.view(np.uint8).reshape(-1).data if a.size else b"")
        elif isinstance(o, dict):
            sha.update(b"{")
            for k in sorted(o, key=repr):
                sha.update(repr(k).encode())
                walk(o[k])
            sha.update(b"}")
        elif isinstance(o, (list, tuple)):
            sha.update(b"[")
            for v in o:
                walk(v)
            sha.update(b"]")
        else:
            sha.update(repr(o).encode())

    walk(obj)
    return sha.hexdigest()


# --------------------------------------------------------------------------------- save
