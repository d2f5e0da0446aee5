"""bfloat16 weights on the wire (`--weights-wire bf16`, issue 19): half the bytes of a broadcast.

bf16 is the upper half of an IEEE float32 (sign, the same 8 exponent bits, 7 of the 23 mantissa
bits), so f32 -> bf16 -> f32 keeps every weight's range and loses only mantissa bits: for a normal
float below the largest bf16 (about 3.39e38; above it rounds to inf, subnormals lose more) the
result is within 2**-8 of it, relatively (round to nearest, ties to even, as torch's
`.to(torch.bfloat16)`). numpy has no bf16 dtype: the wire carries the 16-bit patterns as uint16.
"""
from __future__ import annotations

import numpy as np


def to_bf16(x: np.ndarray) -> np.ndarray:
    """The bf16 bit patterns (uint16) of float32 `x`: round to nearest, ties to even. torch's
    conversion, one vectorised pass: with five numpy passes a bf16 publish took longer than an f32
    one (bench/results/broadcast.jsonl, fe2f6dc)."""
    import torch  # noqa: PLC0415 - only the learner encodes; decoding needs numpy alone
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def from_bf16(b: np.ndarray) -> np.ndarray:
    """float32 values of bf16 bit patterns (uint16): exact (the lower mantissa bits are zero)."""
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
