"""Wire format between actors and learner: a msgpack header frame plus raw array frames.

Frame 0 is a msgpack map {"magic", "v", "kind", "actor", "env", "seq", "version", "arrays", "meta"}
where "arrays" lists [name, dtype, shape] for frames 1..n, each the raw C-contiguous bytes of one
array. Never pickle. `decode` trusts nothing from the network: it checks sizes first, then the
header, then every array's dtype, shape and byte length against the kind's schema (SCHEMAS), and only
then wraps memory. Every failure is a ProtocolError subclass whose `.reason` the learner counts.

Decoded arrays are READ-ONLY numpy views of the received frames (np.frombuffer, no copy): a consumer
that keeps or modifies them copies them (e.g. writing into the replay is that copy).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import msgpack
import numpy as np

from fpac_async.wire.bf16 import from_bf16, to_bf16

# Constants, errors and schemas live in fpac_async/wire/schema.py; they are re-exported from here.
from fpac_async.wire.schema import (  # noqa: F401
    ACTOR, EVALUATOR, HEARTBEAT, REFUSE, DEFAULT_MAX_BYTES, DtypeError, EVAL, EVAL_RESULT, FIRST,
    GarbageError, GRANT, HELLO, KindSchema, MAGIC, MAX_HEADER_BYTES, MAX_NDIM, MagicError,
    OversizedError, POLICY, PROTOCOL_VERSION, ProtocolError, SCHEMAS, STATS, STEPS, STOP,
    SchemaError, ShapeError, TERMINAL, TRUNCATED, TruncatedError, VersionError, WEIGHTS,
    _CANONICAL, _DIMS, _HEADER_KEYS, _INT_END, _WIRE_DTYPES, _int)


@dataclass
class Message:
    """One protocol message. `arrays` of a decoded message are read-only views (copy to keep)."""

    kind: str
    actor: int = 0
    env: int = 0
    seq: int = 0
    version: int = 0
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- encode
def _pack_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):  # numpy scalars in meta become plain Python numbers
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__} in a message header")


def encode(msg: Message) -> list[bytes | memoryview]:
    """Frames of `msg`: the header, then each array's raw bytes (a memoryview: no copy if contiguous)."""
    specs, frames = [], []
    for name, arr in msg.arrays.items():
        arr = np.asarray(arr)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        wire = _CANONICAL.get(arr.dtype)
        if wire is None:
            raise DtypeError(f"array {name}: dtype {arr.dtype} is not one of {sorted(_CANONICAL.values())}")
        arr = np.ascontiguousarray(arr)
        specs.append([name, wire, list(arr.shape)])
        frames.append(memoryview(arr.reshape(-1).view(np.uint8)) if arr.size else b"")
    header = msgpack.packb({"magic": MAGIC, "v": PROTOCOL_VERSION, "kind": msg.kind, "actor": msg.actor,
                            "env": msg.env, "seq": msg.seq, "version": msg.version, "arrays": specs,
                            "meta": msg.meta}, use_bin_type=True, default=_pack_default)
    if len(header) > MAX_HEADER_BYTES:
        raise OversizedError(f"header is {len(header)} bytes, over the {MAX_HEADER_BYTES} cap")
    return [header, *frames]


# ---------------------------------------------------------------- decode
def _as_bytes_view(frame: Any, i: int) -> memoryview:
    try:
        view = memoryview(frame)  # bytes, bytearray, memoryview, zmq.Frame: any buffer
    except TypeError:
        raise GarbageError(f"frame {i}: a {type(frame).__name__} is not a byte buffer") from None
    if view.format != "B" or view.ndim != 1:
        try:
            view = view.cast("B")
        except (TypeError, ValueError):  # not C-contiguous, or a format that cannot be cast
            raise GarbageError(f"frame {i}: not a contiguous byte buffer") from None
    return view


def _unpack_header(raw: memoryview) -> dict:
    try:
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True, use_list=True,
                                 max_str_len=MAX_HEADER_BYTES, max_bin_len=0, max_ext_len=0,
                                 max_array_len=MAX_HEADER_BYTES, max_map_len=1024)
    except (msgpack.exceptions.UnpackException, ValueError) as e:  # ValueError: limits, bad UTF-8
        raise GarbageError(f"header is not valid msgpack: {type(e).__name__}: {e}"[:200]) from None
    if type(header) is not dict:
        raise GarbageError(f"header is a msgpack {type(header).__name__}, not a map")
    if header.get("magic") != MAGIC:
        raise MagicError(f"header magic is {header.get('magic')!r:.40}, expected {MAGIC!r}")
    if header.get("v") != PROTOCOL_VERSION or type(header.get("v")) is not int:
        raise VersionError(f"protocol version {header.get('v')!r:.40}, this side speaks {PROTOCOL_VERSION}")
    if set(header) != _HEADER_KEYS:
        raise SchemaError(f"header keys: missing {sorted(_HEADER_KEYS - set(header))}, "
                          f"unknown {sorted(map(repr, set(header) - _HEADER_KEYS))[:8]}")
    for key in ("actor", "env", "seq", "version"):
        _int()(header[key], f"header.{key}")
    if type(header["kind"]) is not str or header["kind"] not in SCHEMAS:
        raise SchemaError(f"header.kind {header['kind']!r:.40} is not one of {sorted(SCHEMAS)}")
    if type(header["arrays"]) is not list or type(header["meta"]) is not dict:
        raise SchemaError("header.arrays must be a list and header.meta a map")
    return header


def _check_array(entry: Any, i: int, schema: KindSchema, bound: dict[str, int], seen: set[str],
                 frame_len: int, max_bytes: int) -> tuple[str, np.dtype, tuple[int, ...]]:
    if type(entry) is not list or len(entry) != 3:
        raise SchemaError(f"header.arrays[{i}]: expected [name, dtype, shape]")
    name, dtype_str, shape = entry
    if type(name) is not str or name not in schema.arrays:
        raise SchemaError(f"header.arrays[{i}]: array {name!r:.40} is not allowed here "
                          f"(allowed: {sorted(schema.arrays)})")
    if name in seen:
        raise SchemaError(f"array {name}: appears twice")
    seen.add(name)
    spec = schema.arrays[name]
    dtype = _WIRE_DTYPES.get(dtype_str) if type(dtype_str) is str else None
    if dtype is None or dtype != spec.dtype:
        raise DtypeError(f"array {name}: dtype {dtype_str!r:.40}, expected {_CANONICAL[spec.dtype]}")
    if (type(shape) is not list or len(shape) > MAX_NDIM
            or any(type(d) is not int or not 0 <= d < _INT_END for d in shape)):
        raise ShapeError(f"array {name}: shape must be a list of at most {MAX_NDIM} ints >= 0")
    if len(shape) != len(spec.dims):
        raise ShapeError(f"array {name}: {len(shape)} dims, expected {len(spec.dims)} {spec.dims}")
    for d, want in zip(shape, spec.dims):
        if isinstance(want, int):
            if d != want:
                raise ShapeError(f"array {name}: shape {shape}, expected {spec.dims}")
            continue
        lo, hi = _DIMS[want]
        if not lo <= d <= hi:
            raise ShapeError(f"array {name}: dim {want}={d} outside [{lo}, {hi}]")
        if bound.setdefault(want, d) != d:
            raise SchemaError(f"array {name}: {want}={d} but another array has {want}={bound[want]}")
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if nbytes > max_bytes:
        raise ShapeError(f"array {name}: shape {shape} declares {nbytes} bytes, over the cap")
    if frame_len < nbytes:
        raise TruncatedError(f"array {name}: frame has {frame_len} bytes, shape needs {nbytes}")
    if frame_len > nbytes:
        raise ShapeError(f"array {name}: frame has {frame_len} bytes, shape {shape} needs {nbytes}")
    return name, dtype, tuple(shape)


def decode(frames: Sequence[Any], max_bytes: int = DEFAULT_MAX_BYTES) -> Message:
    """Validate and unpack one message; raises a ProtocolError subclass on any fault, nothing else."""
    if not isinstance(frames, (list, tuple)) or not frames:
        raise TruncatedError("no frames")
    if len(frames) > 1 + 64:
        raise SchemaError(f"{len(frames)} frames: more than any kind uses")
    views = [_as_bytes_view(f, i) for i, f in enumerate(frames)]
    total = sum(v.nbytes for v in views)
    if total > max_bytes:  # before unpacking anything
        raise OversizedError(f"message is {total} bytes, over the {max_bytes} cap")
    if views[0].nbytes > MAX_HEADER_BYTES:
        raise OversizedError(f"header is {views[0].nbytes} bytes, over the {MAX_HEADER_BYTES} cap")
    header = _unpack_header(views[0])
    schema = SCHEMAS[header["kind"]]
    entries = header["arrays"]
    if len(entries) > len(views) - 1:
        raise TruncatedError(f"header lists {len(entries)} arrays, only {len(views) - 1} frames follow")
    if len(entries) < len(views) - 1:
        raise SchemaError(f"header lists {len(entries)} arrays, but {len(views) - 1} frames follow")
    bound: dict[str, int] = {}
    seen: set[str] = set()
    checked = [_check_array(e, i, schema, bound, seen, views[i + 1].nbytes, max_bytes)
               for i, e in enumerate(entries)]
    missing = [n for n, s in schema.arrays.items() if s.required and n not in seen]
    if missing:
        raise SchemaError(f"{header['kind']}: required arrays {missing} are missing")
    arrays = {}
    for (name, dtype, shape), view in zip(checked, views[1:]):
        arr = np.frombuffer(view, dtype=dtype).reshape(shape)
        arr.flags.writeable = False
        arrays[name] = arr
    meta = _check_meta(header["kind"], schema, header["meta"])
    if schema.check is not None:
        schema.check(arrays, meta)
    return Message(header["kind"], header["actor"], header["env"], header["seq"], header["version"],
                   arrays, meta)


def _check_meta(kind: str, schema: KindSchema, meta: dict) -> dict:
    unknown = set(meta) - set(schema.meta)
    if unknown:
        raise SchemaError(f"{kind}: unknown meta keys {sorted(map(repr, unknown))[:8]}")
    out = {}
    for key, (check, required) in schema.meta.items():
        if key in meta:
            out[key] = check(meta[key], f"meta.{key}")
        elif required:
            raise SchemaError(f"{kind}: meta.{key} is missing")
    return out


# ---------------------------------------------------------------- builders, one per kind
def hello_message(actor: int, task: str, pid: int, obs_shape: Sequence[int], action_dim: int,
                  seq: int = 0, state_dim: int | None = None, role: str | None = None,
                  settings: dict[str, Any] | None = None) -> Message:
    """settings: the run settings the sender was started with (fpac_async.settings), which the
    learner compares with its own and answers with `refuse` on a mismatch."""
    meta: dict[str, Any] = {"task": task, "pid": pid, "obs_shape": [int(d) for d in obs_shape],
                            "action_dim": int(action_dim)}
    if state_dim is not None:
        meta["state_dim"] = int(state_dim)
    if role is not None:
        meta["role"] = role
    if settings is not None:
        meta["settings"] = dict(settings)
    return Message(HELLO, actor, 0, seq, 0, {}, meta)


def steps_message(actor: int, env: int, seq: int, step0: int, obs: np.ndarray | None,
                  action: np.ndarray, reward: np.ndarray, flags: np.ndarray, version: np.ndarray,
                  cam: np.ndarray | None = None, state: np.ndarray | None = None) -> Message:
    """T consecutive records of one (actor, env) stream; step0 is the index of the first record.
    obs None: an actor that does not render (its records carry state instead of frames)."""
    arrays = {} if obs is None else {"obs": obs}
    arrays.update(action=action, reward=reward, flags=flags, version=version)
    if cam is not None:
        arrays["cam"] = cam
    if state is not None:
        arrays["state"] = state
    latest = int(version[-1]) if len(version) else 0  # the header carries the newest acting version
    return Message(STEPS, actor, env, seq, latest, arrays, {"step0": int(step0)})


def stats_message(actor: int, seq: int, episodes: list[dict] | None = None,
                  perf: dict[str, float] | None = None, version: int = 0) -> Message:
    meta: dict[str, Any] = {}
    if episodes is not None:
        meta["episodes"] = episodes
    if perf is not None:
        meta["perf"] = perf
    return Message(STATS, actor, 0, seq, version, {}, meta)


def eval_result_message(actor: int, seq: int, eval_id: int, returns: Sequence[float],
                        lengths: Sequence[int], version: int = 0,
                        wall_s: float | None = None) -> Message:
    """The answer to `eval`; the header's version is the policy version that was evaluated."""
    meta: dict[str, Any] = {"eval_id": eval_id, "returns": [float(r) for r in returns],
                            "lengths": [int(n) for n in lengths]}
    if wall_s is not None:
        meta["wall_s"] = float(wall_s)
    return Message(EVAL_RESULT, actor, 0, seq, version, {}, meta)


def heartbeat_message(actor: int, seq: int, version: int, busy: bool,
                      eval_id: int | None = None, episodes_done: int = 0,
                      settings: dict[str, Any] | None = None) -> Message:
    """An evaluator's liveness signal (every second, also while it runs episodes), with its run
    settings: a learner that restarted meanwhile checks them without another hello."""
    meta: dict[str, Any] = {"busy": bool(busy), "episodes_done": int(episodes_done)}
    if settings is not None:
        meta["settings"] = dict(settings)
    if eval_id is not None:
        meta["eval_id"] = int(eval_id)
    return Message(HEARTBEAT, actor, 0, seq, version, {}, meta)


def refuse_message(seq: int, version: int, target: int, role: str, reason: str) -> Message:
    """The learner refuses one actor or evaluator (its settings disagree with the run's)."""
    return Message(REFUSE, 0, 0, seq, version, {},
                   {"target_actor": int(target), "role": role, "reason": reason[:256]})


def policy_message(seq: int, version: int, script: bytes, weights: np.ndarray,
                   layout: list, random: bool = False, run: int | None = None) -> Message:
    """TorchScript bytes plus flat f32 weights; layout = [[name, [shape...]], ...] in weights order.
    run: the learner process's id (a new one after a restart: actors then say hello again)."""
    meta: dict[str, Any] = {"layout": layout, "random": bool(random)}
    if run is not None:
        meta["run"] = int(run)
    return Message(POLICY, 0, 0, seq, version,
                   {"script": np.frombuffer(script, dtype=np.uint8), "weights": weights}, meta)


def weights_message(seq: int, version: int, weights: np.ndarray, layout: list,
                    random: bool = False, run: int | None = None, bf16: bool = False) -> Message:
    """Flat f32 weights, or (bf16) their bfloat16 bit patterns as `weights_bf16`: half the bytes."""
    meta: dict[str, Any] = {"layout": layout, "random": bool(random)}
    if run is not None:
        meta["run"] = int(run)
    arrays = {"weights_bf16": to_bf16(weights)} if bf16 else {"weights": weights}
    return Message(WEIGHTS, 0, 0, seq, version, arrays, meta)


def weights_of(msg: Message) -> np.ndarray:
    """The flat f32 weights of a policy or weights message, whichever way they travelled."""
    if "weights_bf16" in msg.arrays:
        return from_bf16(msg.arrays["weights_bf16"])
    return msg.arrays["weights"]


def grant_message(seq: int, version: int, actors: Sequence[int], upto: Sequence[int],
                  run: int | None = None) -> Message:
    """Actor actors[i] may step until each of its env streams holds upto[i] records."""
    meta: dict[str, Any] = {} if run is None else {"run": int(run)}
    return Message(GRANT, 0, 0, seq, version, {"actors": np.asarray(actors, np.int64),
                                               "upto": np.asarray(upto, np.int64)}, meta)


def stop_message(seq: int, version: int, reason: str = "done") -> Message:
    """The learner's end of run: actors exit cleanly and are not restarted."""
    return Message(STOP, 0, 0, seq, version, {}, {"reason": reason})


def eval_message(seq: int, version: int, eval_id: int, episodes: int, target_actor: int) -> Message:
    return Message(EVAL, 0, 0, seq, version, {},
                   {"eval_id": eval_id, "episodes": episodes, "target_actor": target_actor})
