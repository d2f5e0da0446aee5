"""bfloat16 weights on the wire (`--weights-wire bf16`, issue 19): half the bytes of a broadcast.

bf16 is the upper half of an IEEE float32 (sign, the same 8 exponent bits, 7 of the 23 mantissa
bits), so f32 -> bf16 -> f32 keeps every weight's range and loses only mantissa bits: the result
is within 2**-8 of the weight, relatively (round to nearest, ties to even, as torch's
`.to(torch.bfloat16)`). numpy has no bf16 dtype: the wire carries the 16-bit patterns as uint16.
"""
from __future__ import annotations

import numpy as np

_QUIET = np.uint32(0x0040)  # a NaN stays a NaN (its upper mantissa bit set) after the cut


def to_bf16(x: np.ndarray) -> np.ndarray:
    """The bf16 bit patterns (uint16) of float32 `x`: round to nearest, ties to even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    with np.errstate(over="ignore"):  # uint32 wrap-around only for NaNs, replaced below
        rounded = (u + (np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1)))) >> 16
    rounded = np.where(np.isnan(x), (u >> 16) | _QUIET, rounded)
    return rounded.astype(np.uint16)


def from_bf16(b: np.ndarray) -> np.ndarray:
    """float32 values of bf16 bit patterns (uint16): exact (the lower mantissa bits are zero)."""
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
