"""The wire format's constants, errors and per-kind schemas: the one table (SCHEMAS) every message
is validated against. fpac_async.wire.protocol encodes and decodes, and re-exports these names."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

MAGIC = "FPAC"
PROTOCOL_VERSION = 1
FIRST, TERMINAL, TRUNCATED = 1, 2, 4  # record flags (docs/INTERFACES.md)
HELLO, STEPS, STATS, EVAL_RESULT = "hello", "steps", "stats", "eval_result"  # actor -> learner
HEARTBEAT = "heartbeat"  # evaluator -> learner (control socket), with hello and eval_result
POLICY, WEIGHTS, EVAL, STOP = "policy", "weights", "eval", "stop"  # learner -> actors
REFUSE = "refuse"  # learner -> one actor or evaluator: its settings disagree with the run's
GRANT = "grant"  # learner -> actors: how far each actor's streams may run (actor-side pacing)
ACTOR, EVALUATOR = "actor", "evaluator"  # the roles of a hello (and of a refuse's target)

DEFAULT_MAX_BYTES = 64 * 2**20
MAX_HEADER_BYTES = 64 * 2**10
MAX_NDIM = 5
_INT_END = 2**63  # every header int lies in [0, 2**63)
_HEADER_KEYS = frozenset({"magic", "v", "kind", "actor", "env", "seq", "version", "arrays", "meta"})
# Wire dtype strings -> dtype. A lookup table (never np.dtype(untrusted string)): little-endian or
# native only; the host is little-endian on every machine we deploy to.
_U8, _U16, _I32, _I64, _F32 = (np.dtype(s) for s in ("<u1", "<u2", "<i4", "<i8", "<f4"))
_WIRE_DTYPES: dict[str, np.dtype] = {}
for _dt, _names in ((_U8, ("|u1", "<u1", "=u1", "u1", "uint8")),
                    (_U16, ("<u2", "=u2", "u2", "uint16")),
                    (_I32, ("<i4", "=i4", "i4", "int32")),
                    (_I64, ("<i8", "=i8", "i8", "int64")),
                    (_F32, ("<f4", "=f4", "f4", "float32"))):
    _WIRE_DTYPES.update(dict.fromkeys(_names, _dt))
_CANONICAL = {_U8: "|u1", _U16: "<u2", _I32: "<i4", _I64: "<i8", _F32: "<f4"}


class ProtocolError(ValueError):
    """A message that cannot be accepted; `.reason` names the class of fault."""

    reason = "garbage"


class TruncatedError(ProtocolError):
    reason = "truncated"


class OversizedError(ProtocolError):
    reason = "oversized"


class VersionError(ProtocolError):
    reason = "version"


class MagicError(ProtocolError):
    reason = "magic"


class DtypeError(ProtocolError):
    reason = "dtype"


class ShapeError(ProtocolError):
    reason = "shape"


class SchemaError(ProtocolError):
    reason = "schema"


class GarbageError(ProtocolError):
    reason = "garbage"


# ---------------------------------------------------------------- meta validators (value, path) -> value
Check = Callable[[Any, str], Any]


def _int(lo: int = 0, hi: int = _INT_END - 1) -> Check:
    def check(v: Any, path: str) -> int:
        if type(v) is not int or not lo <= v <= hi:  # type(...) is int: bool is not an int here
            raise SchemaError(f"{path}: expected an int in [{lo}, {hi}], got {v!r:.80}")
        return v
    return check


def _float(v: Any, path: str) -> float:
    if type(v) not in (int, float) or not math.isfinite(v):
        raise SchemaError(f"{path}: expected a finite number, got {v!r:.80}")
    return float(v)


def _bool(v: Any, path: str) -> bool:
    if type(v) is not bool:
        raise SchemaError(f"{path}: expected a bool, got {v!r:.80}")
    return v


def _str(v: Any, path: str) -> str:
    if type(v) is not str or not 0 < len(v) <= 256:
        raise SchemaError(f"{path}: expected a non-empty string, got {v!r:.80}")
    return v


def _list(item: Check, max_len: int, min_len: int = 0) -> Check:
    def check(v: Any, path: str) -> list:
        if type(v) is not list or not min_len <= len(v) <= max_len:
            raise SchemaError(f"{path}: expected a list of {min_len}..{max_len} items")
        return [item(x, f"{path}[{i}]") for i, x in enumerate(v)]
    return check


def _record(fields: dict[str, Check]) -> Check:
    """A map with exactly these keys."""
    def check(v: Any, path: str) -> dict:
        if type(v) is not dict or set(v) != set(fields):
            raise SchemaError(f"{path}: expected a map with keys {sorted(fields)}")
        return {k: fields[k](v[k], f"{path}.{k}") for k in fields}
    return check


def _str_float_map(v: Any, path: str) -> dict:
    if type(v) is not dict or len(v) > 256:
        raise SchemaError(f"{path}: expected a map of at most 256 str -> number")
    return {_str(k, path): _float(x, f"{path}.{k}") for k, x in v.items()}


_shape_list = _list(_int(), MAX_NDIM)


def _layout_entry(v: Any, path: str) -> list:
    if type(v) is not list or len(v) != 2:
        raise SchemaError(f"{path}: expected [name, [shape...]]")
    return [_str(v[0], path + "[0]"), _shape_list(v[1], path + "[1]")]


_layout = _list(_layout_entry, 4096)


def _role(v: Any, path: str) -> str:
    if v not in (ACTOR, EVALUATOR):
        raise SchemaError(f"{path}: expected {ACTOR!r} or {EVALUATOR!r}, got {v!r:.80}")
    return v


def _settings(v: Any, path: str) -> dict:
    """The run settings an actor was started with (hello): str -> int | bool | str, at most 32."""
    if type(v) is not dict or len(v) > 32:
        raise SchemaError(f"{path}: expected a map of at most 32 settings")
    out: dict[str, Any] = {}
    for k, x in v.items():
        key = _str(k, path)
        if type(x) is bool or type(x) is int and 0 <= x < _INT_END:
            out[key] = x
        else:
            out[key] = _str(x, f"{path}.{key}")
    return out  # [[name, [shape...]], ...]: how flat weights split into tensors


# ---------------------------------------------------------------- per-kind schemas
@dataclass(frozen=True)
class ArraySpec:
    dtype: np.dtype
    dims: tuple[int | str, ...]  # int: fixed; str: a symbol bound once per message (see _DIMS)
    required: bool = True


@dataclass(frozen=True)
class KindSchema:
    arrays: dict[str, ArraySpec]
    meta: dict[str, tuple[Check, bool]]  # key -> (validator, required); other keys are rejected
    check: Callable[[dict[str, np.ndarray], dict], None] | None = None  # cross-field rules


_DIMS = {"T": (1, 2**31), "H": (1, 1024), "W": (1, 1024), "A": (1, 64), "D": (1, 4096),
         "N": (0, _INT_END - 1), "P": (0, _INT_END - 1), "G": (0, 4096)}  # symbol -> (lo, hi)


def _check_steps(arrays: dict[str, np.ndarray], meta: dict) -> None:
    if "obs" not in arrays and "state" not in arrays:
        raise SchemaError("steps: neither obs nor state: the records hold no observation")
    if np.any(arrays["flags"] & np.uint8(~(FIRST | TERMINAL | TRUNCATED) & 0xFF)):
        raise SchemaError("array flags: bits other than FIRST|TERMINAL|TRUNCATED are set")


def _check_layout(arrays: dict[str, np.ndarray], meta: dict) -> None:
    names = [n for n in ("weights", "weights_bf16") if n in arrays]
    if len(names) != 1:  # a weights message carries f32 or bf16 weights (fpac_async/wire/bf16.py)
        raise SchemaError("weights: expected exactly one of weights and weights_bf16")
    total = sum(math.prod(shape) for _, shape in meta["layout"])
    if total != arrays[names[0]].shape[0]:
        raise SchemaError(f"meta.layout: sizes sum to {total}, {names[0]} has "
                          f"{arrays[names[0]].shape[0]}")


def _check_eval_result(arrays: dict[str, np.ndarray], meta: dict) -> None:
    if len(meta["returns"]) != len(meta["lengths"]):
        raise SchemaError("meta.returns and meta.lengths differ in length")


def _check_grant(arrays: dict[str, np.ndarray], meta: dict) -> None:
    if np.any(arrays["actors"] < 0) or np.any(arrays["upto"] < 0):
        raise SchemaError("grant: negative actor id or stream index")


SCHEMAS: dict[str, KindSchema] = {
    HELLO: KindSchema({}, {"task": (_str, True), "pid": (_int(), True),
                           "obs_shape": (_list(_int(1), MAX_NDIM, 1), True),
                           "action_dim": (_int(1, 64), True),
                           "state_dim": (_int(0, 4096), False),
                           "role": (_role, False), "settings": (_settings, False)}),
    # obs is absent when the actor does not render (encoders that need no pixels): then state
    # must be there (_check_steps), and the learner refuses frames it does not expect.
    STEPS: KindSchema({"obs": ArraySpec(_U8, ("T", 3, "H", "W"), False),
                       "action": ArraySpec(_F32, ("T", "A")),
                       "reward": ArraySpec(_F32, ("T",)), "flags": ArraySpec(_U8, ("T",)),
                       "version": ArraySpec(_I32, ("T",)), "cam": ArraySpec(_F32, ("T", 2), False),
                       "state": ArraySpec(_F32, ("T", "D"), False)},
                      {"step0": (_int(), True)}, _check_steps),
    STATS: KindSchema({}, {"episodes": (_list(_record({"return": _float, "length": _int(),
                                                        "env": _int()}), 1000), False),
                           "perf": (_str_float_map, False)}),
    EVAL_RESULT: KindSchema({}, {"eval_id": (_int(), True), "returns": (_list(_float, 1000), True),
                                 "lengths": (_list(_int(), 1000), True),
                                 "wall_s": (_float, False)}, _check_eval_result),
    HEARTBEAT: KindSchema({}, {"busy": (_bool, True), "eval_id": (_int(), False),
                               "episodes_done": (_int(0, 1000), False),
                               "settings": (_settings, False)}),
    POLICY: KindSchema({"script": ArraySpec(_U8, ("N",)), "weights": ArraySpec(_F32, ("P",))},
                       {"layout": (_layout, True), "random": (_bool, True), "run": (_int(), False)},
                       _check_layout),
    WEIGHTS: KindSchema({"weights": ArraySpec(_F32, ("P",), False),
                         "weights_bf16": ArraySpec(_U16, ("P",), False)},
                        {"layout": (_layout, True), "random": (_bool, False),
                         "run": (_int(), False)}, _check_layout),
    EVAL: KindSchema({}, {"eval_id": (_int(), True), "episodes": (_int(1, 1000), True),
                          "target_actor": (_int(), True)}),
    # actors[i] may step until each of its env streams holds upto[i] records (learner/pacing.py)
    GRANT: KindSchema({"actors": ArraySpec(_I64, ("G",)), "upto": ArraySpec(_I64, ("G",))},
                      {"run": (_int(), False)}, _check_grant),
    STOP: KindSchema({}, {"reason": (_str, False)}),  # end of run: actors exit, not restarted
    REFUSE: KindSchema({}, {"target_actor": (_int(), True), "role": (_role, True),
                            "reason": (_str, True)}),
}
