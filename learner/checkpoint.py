"""Atomic, verified checkpoints of a learner run (docs/INTERFACES.md, "Run directory").

File layout of run_dir/checkpoints/ckpt-<updates>.pt:
    a 256-byte header: b"FPAC-CKPT\\n" + JSON {"format_version", "sha256", "payload_bytes"} + padding
    the payload: torch.save of the state dict
The header's SHA-256 of the payload detects truncated or corrupted files before anything is
unpickled, and the payload is read with torch.load(weights_only=True): the state holds only tensors,
dicts, lists, tuples, ints, floats, strs, bools and None (numpy arrays are stored as their raw bytes
in a uint8 tensor plus dtype and shape, and come back as numpy arrays).

Writes go to a temp file in the same directory, are fsynced, then os.replace'd into place (atomic
on POSIX); `latest` (the file name of the newest complete checkpoint) is replaced the same way
afterwards. A crash at any point leaves the previous `latest` and its file intact, plus perhaps a
temp file (.ckpt-<updates>.pt.XXXX): `unfinished_writes` lists those, the learner logs them at
start-up and the next save deletes them. Loading never writes or deletes anything.

Test hook: FPAC_TEST_CHECKPOINT_PAUSE=k makes this process's k-th save stop for an hour after
its temp file is written and fsynced, before the rename (tests kill -9 the learner there).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tempfile
from typing import Any, BinaryIO, Callable, Dict, Iterable, List, Optional, Union

import torch

from learner.checkpoint_state import from_safe, to_safe

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAGIC = b"FPAC-CKPT\n"
HEADER_BYTES = 256
REQUIRED_KEYS = ("format_version", "config", "sac", "counters", "rng")
COUNTER_KEYS = ("env_steps", "agent_steps", "updates", "episodes", "policy_version")
# Config fields a resumed run must share with its checkpoint: they fix network shapes or the
# meaning of the stored data (observation layout, step units).
COMPATIBLE_FIELDS = (
    "env.task", "env.image_size", "env.action_repeat", "env.state_source",
    "agent.encoder", "agent.num_points", "agent.softmax", "agent.scalar_feature",
    "agent.velocity", "agent.relative", "agent.camera_offset", "agent.conv_channels",
    "agent.frame_stack", "agent.pixels_feature_dim", "agent.hidden_dim", "agent.hidden_layers",
)
_NAME = re.compile(r"^ckpt-(\d+)\.pt$")
_TEMP = re.compile(r"^\.(ckpt-\d+\.pt|latest)\..+$")  # mkstemp names of _atomic_write
PAUSE_ENV = "FPAC_TEST_CHECKPOINT_PAUSE"
_saves = 0  # checkpoints saved by this process (for the test hook)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


class _HashingWriter:
    """File wrapper that hashes and counts everything torch.save writes through it."""

    def __init__(self, f: io.BufferedWriter):
        self.f, self.sha, self.n = f, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.n += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def _header(sha256: str, payload_bytes: int) -> bytes:
    meta = json.dumps({"format_version": FORMAT_VERSION, "sha256": sha256,
                       "payload_bytes": payload_bytes}).encode()
    head = MAGIC + meta + b"\n"
    assert len(head) <= HEADER_BYTES
    return head.ljust(HEADER_BYTES, b" ")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: str, write: Callable[[BinaryIO], None],
                  before_rename: Callable[[str], None] | None = None) -> None:
    """Write a file through `write(f)` into a temp file beside it, fsync, then rename over path:
    a reader (or a crash) never sees half a file."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_rename is not None:
            before_rename(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def save_checkpoint(run_dir: str, state: Dict[str, Any], keep: int = 2) -> str:
    """Write run_dir/checkpoints/ckpt-<updates>.pt atomically, point `latest` at it, prune.

    `state` needs "config" (dict), "sac", "counters" (COUNTER_KEYS) and "rng" (capture_rng());
    "replay" and other keys are optional. Returns the path written.
    """
    missing = [k for k in REQUIRED_KEYS[1:] if k not in state]
    missing += [f"counters.{k}" for k in COUNTER_KEYS if k not in state.get("counters", {})]
    if missing:
        raise ValueError(f"checkpoint state is missing {missing}")
    if keep < 1:
        raise ValueError(f"keep must be >= 1; got {keep}")
    directory = os.path.join(run_dir, "checkpoints")
    os.makedirs(directory, exist_ok=True)
    previous = _read_latest(directory)
    name = f"ckpt-{int(state['counters']['updates'])}.pt"
    path = os.path.join(directory, name)
    payload = to_safe({**state, "format_version": FORMAT_VERSION})

    def write_payload(f: BinaryIO) -> None:
        f.write(b"\0" * HEADER_BYTES)  # placeholder until the payload's hash is known
        writer = _HashingWriter(f)
        torch.save(payload, writer)
        f.flush()
        f.seek(0)
        f.write(_header(writer.sha.hexdigest(), writer.n))

    for leftover in unfinished_writes(directory):  # a learner stopped while writing them
        os.unlink(os.path.join(directory, leftover))
    global _saves
    _saves += 1
    _atomic_write(path, write_payload, _pause_hook if os.environ.get(PAUSE_ENV) == str(_saves)
                  else None)
    _atomic_write(os.path.join(directory, "latest"), lambda f: f.write((name + "\n").encode()))
    _prune(directory, keep, protect={name, previous})
    return path


def _pause_hook(tmp: str) -> None:
    import time  # noqa: PLC0415 (only the test hook sleeps)
    log.warning("%s: pausing for an hour with %s written, before renaming it into place",
                PAUSE_ENV, tmp)
    time.sleep(3600)


def unfinished_writes(directory: str) -> List[str]:
    """Temp files of checkpoint writes that never finished (the writer died): never loaded."""
    if not os.path.isdir(directory):
        return []
    return sorted(n for n in os.listdir(directory) if _TEMP.match(n))


def _read_latest(directory: str) -> Optional[str]:
    try:
        with open(os.path.join(directory, "latest")) as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


def list_checkpoints(directory: str) -> List[str]:
    """Checkpoint file names in `directory`, oldest (fewest updates) first."""
    names = [n for n in os.listdir(directory) if _NAME.match(n)]
    return sorted(names, key=lambda n: int(_NAME.match(n).group(1)))  # type: ignore[union-attr]


def _prune(directory: str, keep: int, protect: Iterable[Optional[str]]) -> None:
    """Delete all but the newest `keep` checkpoints, never one in `protect`."""
    names = list_checkpoints(directory)
    survivors = set(names[-keep:]) | {p for p in protect if p}
    for n in names:
        if n not in survivors:
            os.unlink(os.path.join(directory, n))


# --------------------------------------------------------------------------------- load
def resolve_checkpoint(path_or_run_dir: str) -> str:
    """The checkpoint file named by a file path, a checkpoints dir or a run dir (via `latest`)."""
    if not os.path.isdir(path_or_run_dir):
        if not os.path.exists(path_or_run_dir):
            raise CheckpointError(f"checkpoint {path_or_run_dir} does not exist")
        return path_or_run_dir
    directory = path_or_run_dir
    if not os.path.exists(os.path.join(directory, "latest")):
        directory = os.path.join(path_or_run_dir, "checkpoints")
    name = _read_latest(directory) if os.path.isdir(directory) else None
    if name is None:
        raise CheckpointError(f"no checkpoint in {path_or_run_dir}: "
                              f"{os.path.join(directory, 'latest')} is missing or empty")
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        raise CheckpointError(f"{os.path.join(directory, 'latest')} names {name}, "
                              f"but {path} does not exist")
    return path


def load_checkpoint(path_or_run_dir: str,
                    map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Read and verify a checkpoint (see the module docstring); raises CheckpointError."""
    path = resolve_checkpoint(path_or_run_dir)
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
            payload = f.read()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    meta = _parse_header(path, head)
    if meta["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format_version {meta['format_version']}; "
                              f"this code reads format_version {FORMAT_VERSION}")
    if len(payload) != meta["payload_bytes"]:
        raise CheckpointError(f"checkpoint {path} is truncated or padded: payload is "
                              f"{len(payload)} bytes, header says {meta['payload_bytes']}")
    if hashlib.sha256(payload).hexdigest() != meta["sha256"]:
        raise CheckpointError(f"checkpoint {path} is corrupt: SHA-256 of the payload does not "
                              f"match the header")
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as e:  # any unpickling failure means an unusable file; say which and why
        raise CheckpointError(f"checkpoint {path} cannot be unpickled: "
                              f"{type(e).__name__}: {e}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a dict")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    missing += [f"counters.{k}" for k in COUNTER_KEYS if k not in state.get("counters", {})]
    if missing:
        raise CheckpointError(f"checkpoint {path} is missing keys {missing}")
    if state["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format_version {state['format_version']}; "
                              f"this code reads format_version {FORMAT_VERSION}")
    state = from_safe(state)
    state["path"] = path
    return state


def _parse_header(path: str, head: bytes) -> Dict[str, Any]:
    if len(head) < HEADER_BYTES or not head.startswith(MAGIC):
        raise CheckpointError(f"{path} is not an FPAC checkpoint (bad or truncated header)")
    try:
        meta = json.loads(head[len(MAGIC):].split(b"\n", 1)[0])
        return {"format_version": int(meta["format_version"]), "sha256": str(meta["sha256"]),
                "payload_bytes": int(meta["payload_bytes"])}
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} has a corrupt header: {e}") from None


# ------------------------------------------------------------------------ compatibility
def _lookup(cfg: Dict[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


_MISSING = object()


def check_compatible(ckpt_config: Dict[str, Any], run_config: Dict[str, Any],
                     fields: Iterable[str] = COMPATIBLE_FIELDS) -> None:
    """Raise CheckpointError naming every field in which the two (resolved, `to_dict`) run
    configs differ among those that fix network shapes or data meaning."""
    diffs = []
    for name in fields:
        a, b = _lookup(ckpt_config, name), _lookup(run_config, name)
        if a is _MISSING and b is _MISSING:
            continue
        if a != b:
            show = lambda v: "<missing>" if v is _MISSING else repr(v)  # noqa: E731
            diffs.append(f"{name}: checkpoint {show(a)}, run {show(b)}")
    if diffs:
        raise CheckpointError("checkpoint does not match this run's config: " + "; ".join(diffs))
