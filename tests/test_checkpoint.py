"""Checkpoints: round trip of SAC/optimizer/counters/RNG, `latest`, pruning, and clear errors for
missing, corrupt, wrong-version and incompatible checkpoints that leave existing files untouched."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from fpac_async.config import AgentConfig, RunConfig, to_dict
from fpac_async.agent.sac import SAC
from fpac_async.agent.batch import Batch
from learner.checkpoint import (HEADER_BYTES, CheckpointError, check_compatible, load_checkpoint,
                                save_checkpoint)
from learner.checkpoint_state import capture_rng, restore_rng

H = W = 32
A = 2


def _cfg() -> AgentConfig:
    return AgentConfig(hidden_dim=32, num_points=4, conv_channels=8, batch_size=8)


def _batch(seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (8, 9, H, W), generator=g, dtype=torch.uint8)
    return Batch(obs=frames[:, :6], action=torch.rand(8, A, generator=g) * 2 - 1,
                 reward=torch.rand(8, generator=g), discount=torch.ones(8),
                 next_obs=frames[:, 3:])


def _trained_sac() -> SAC:
    torch.manual_seed(0)
    sac = SAC(_cfg(), (6, H, W), A)
    for i in range(3):
        sac.update(_batch(i))
    return sac


_SHARED: list[SAC] = []


def _shared_sac() -> SAC:
    """One trained SAC for the tests that only save it (building one costs seconds on 2 cores)."""
    if not _SHARED:
        _SHARED.append(_trained_sac())
    return _SHARED[0]


def _state(sac: SAC, updates: int, config: dict | None = None) -> dict:
    return {"config": config if config is not None else to_dict(RunConfig(agent=_cfg())),
            "sac": sac.state_dict(),
            "counters": {"env_steps": 8 * updates, "agent_steps": updates, "updates": updates,
                         "episodes": 1, "policy_version": 2},
            "rng": capture_rng()}


def _snapshot(directory: str) -> dict:
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = f.read()
    return out


def test_round_trip_restores_networks_optimizers_counters_and_rng(tmp_path) -> None:
    sac = _trained_sac()
    replay_like = {"frames": np.arange(24, dtype=np.uint8).reshape(2, 3, 2, 2),
                   "rng": np.random.default_rng(3).bit_generator.state,
                   "flags": np.array([1, 0], np.uint8), "n": np.int64(7)}
    state = _state(sac, updates=3)
    state["replay"] = replay_like
    path = save_checkpoint(str(tmp_path), state)
    assert os.path.basename(path) == "ckpt-3.pt"
    expected_draws = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])

    torch.manual_seed(123)  # disturb every generator, then restore from the checkpoint
    np.random.seed(123)
    random.seed(123)
    loaded = load_checkpoint(str(tmp_path))
    restore_rng(loaded)
    assert torch.equal(torch.rand(4), expected_draws[0])
    assert np.array_equal(np.random.rand(4), expected_draws[1])
    assert [random.random() for _ in range(4)] == expected_draws[2]

    torch.manual_seed(99)
    fresh = SAC(_cfg(), (6, H, W), A)
    fresh.load_state_dict(loaded["sac"])
    obs = _batch(7).obs
    assert torch.equal(fresh.act(obs, deterministic=True), sac.act(obs, deterministic=True))
    for name in ("critic_opt", "actor_opt", "alpha_opt"):
        a, b = getattr(fresh, name).state_dict(), getattr(sac, name).state_dict()
        assert a["param_groups"] == b["param_groups"]
        for k in a["state"]:
            for field in a["state"][k]:
                assert torch.equal(a["state"][k][field], b["state"][k][field])
    assert fresh.num_updates == 3
    assert loaded["counters"] == state["counters"]
    # numpy replay state comes back as numpy with dtype, shape and values intact
    assert loaded["replay"]["frames"].dtype == np.uint8
    assert np.array_equal(loaded["replay"]["frames"], replay_like["frames"])
    assert loaded["replay"]["rng"] == replay_like["rng"] and loaded["replay"]["n"] == 7
    # and the next update gives identical results on both
    torch.manual_seed(5)
    m1 = sac.update(_batch(11))
    torch.manual_seed(5)
    m2 = fresh.update(_batch(11))
    assert m1["critic_loss"].item() == m2["critic_loss"].item()


def test_latest_points_at_newest_and_keep_prunes(tmp_path) -> None:
    sac = _shared_sac()
    for u in (10, 20, 30):
        save_checkpoint(str(tmp_path), _state(sac, u), keep=2)
    ckpts = tmp_path / "checkpoints"
    assert sorted(os.listdir(ckpts)) == ["ckpt-20.pt", "ckpt-30.pt", "latest"]
    assert (ckpts / "latest").read_text().strip() == "ckpt-30.pt"
    assert load_checkpoint(str(tmp_path))["counters"]["updates"] == 30
    assert load_checkpoint(str(ckpts))["counters"]["updates"] == 30  # the checkpoints dir too
    assert load_checkpoint(str(ckpts / "ckpt-20.pt"))["counters"]["updates"] == 20


def test_prune_keeps_the_previous_latest_even_when_numbered_higher(tmp_path) -> None:
    sac = _shared_sac()
    for u in (10, 40, 50):
        save_checkpoint(str(tmp_path), _state(sac, u), keep=2)
    (tmp_path / "checkpoints" / "latest").write_text("ckpt-40.pt\n")  # resumed from 40
    save_checkpoint(str(tmp_path), _state(sac, 45), keep=2)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == [
        "ckpt-40.pt", "ckpt-45.pt", "ckpt-50.pt", "latest"]
    assert load_checkpoint(str(tmp_path))["counters"]["updates"] == 45


def _bad(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / "checkpoints" / name
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("case, message", [
    ("truncated", "truncated"),
    ("flipped", "SHA-256"),
    ("random", "not an FPAC checkpoint"),
    ("empty", "not an FPAC checkpoint"),
    ("missing", "does not exist"),
])
def test_corrupt_or_missing_files_raise_clearly_and_change_nothing(tmp_path, case, message) -> None:
    good = save_checkpoint(str(tmp_path), _state(_shared_sac(), 10))
    data = open(good, "rb").read()
    flipped = bytearray(data)
    flipped[HEADER_BYTES + len(data) // 2] ^= 0xFF
    bad = {"truncated": data[: len(data) - 100], "flipped": bytes(flipped),
           "random": np.random.default_rng(1).bytes(5000), "empty": b""}
    path = (_bad(tmp_path, "ckpt-99.pt", bad[case]) if case in bad
            else str(tmp_path / "checkpoints" / "ckpt-77.pt"))
    before = _snapshot(str(tmp_path))
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(path)
    assert os.path.basename(path) in str(err.value)
    assert _snapshot(str(tmp_path)) == before
    assert load_checkpoint(str(tmp_path))["counters"]["updates"] == 10  # latest still good


def test_run_dir_without_checkpoints_and_dangling_latest(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="latest"):
        load_checkpoint(str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest").write_text("ckpt-5.pt\n")
    with pytest.raises(CheckpointError, match="ckpt-5.pt"):
        load_checkpoint(str(tmp_path))


def test_wrong_format_version_is_rejected(tmp_path) -> None:
    path = save_checkpoint(str(tmp_path), _state(_shared_sac(), 10))
    data = open(path, "rb").read()
    head = data[:HEADER_BYTES].replace(b'"format_version": 1', b'"format_version": 9')
    bad = _bad(tmp_path, "ckpt-11.pt", head + data[HEADER_BYTES:])
    before = _snapshot(str(tmp_path))
    with pytest.raises(CheckpointError, match="format_version 9") as err:
        load_checkpoint(bad)
    assert "ckpt-11.pt" in str(err.value)
    assert _snapshot(str(tmp_path)) == before


def test_missing_keys_are_rejected_at_save(tmp_path) -> None:
    state = _state(_shared_sac(), 10)
    del state["counters"]["episodes"]
    with pytest.raises(ValueError, match="counters.episodes"):
        save_checkpoint(str(tmp_path), state)
    assert not os.path.exists(tmp_path / "checkpoints" / "ckpt-10.pt")


def test_check_compatible_names_every_mismatched_field(tmp_path) -> None:
    ckpt = to_dict(RunConfig(agent=_cfg()))
    check_compatible(ckpt, to_dict(RunConfig(agent=_cfg())))  # identical: fine
    run = RunConfig(agent=AgentConfig(hidden_dim=64, num_points=4, conv_channels=8))
    run.env.task = "walker_walk"
    run.agent.lr = 0.5  # not shape-relevant: allowed to change on resume
    with pytest.raises(CheckpointError) as err:
        check_compatible(ckpt, to_dict(run))
    text = str(err.value)
    assert "agent.hidden_dim: checkpoint 32, run 64" in text
    assert "env.task: checkpoint 'cartpole_swingup', run 'walker_walk'" in text
    assert "lr" not in text


def test_a_write_cut_short_is_ignored_and_cleaned_up_by_the_next_save(tmp_path) -> None:
    """What kill -9 in the middle of a save leaves: a temp file beside the previous checkpoint
    (the process-level kill is tests/test_fault_learner_kill.py)."""
    from learner.checkpoint import unfinished_writes
    sac = _shared_sac()
    save_checkpoint(str(tmp_path), _state(sac, 10))
    ckpts = tmp_path / "checkpoints"
    (ckpts / ".ckpt-20.pt.abc123").write_bytes(b"FPAC-CKPT\n half a file")
    (ckpts / ".latest.xyz").write_bytes(b"ckpt-2")
    assert unfinished_writes(str(ckpts)) == [".ckpt-20.pt.abc123", ".latest.xyz"]
    assert load_checkpoint(str(tmp_path))["counters"]["updates"] == 10  # the previous one
    assert len(os.listdir(ckpts)) == 4  # loading deleted nothing
    save_checkpoint(str(tmp_path), _state(sac, 30))
    assert sorted(os.listdir(ckpts)) == ["ckpt-10.pt", "ckpt-30.pt", "latest"]


def _fail_rename_of(name: str, monkeypatch) -> None:
    real = os.replace

    def replace(src, dst):
        if os.path.basename(dst) == name:
            raise OSError(f"injected: renaming into {dst} fails")
        real(src, dst)
    monkeypatch.setattr("learner.checkpoint.os.replace", replace)


def _fail_payload_write(name: str, monkeypatch) -> None:
    def save(obj, f):
        f.write(b"half a payload")
        raise OSError("injected: the disk filled up in torch.save")
    monkeypatch.setattr("learner.checkpoint.torch.save", save)


@pytest.mark.parametrize("fail", [_fail_rename_of, _fail_payload_write], ids=["rename", "write"])
def test_a_save_that_fails_inside_its_atomic_write_leaves_latest_on_the_previous(
        tmp_path, monkeypatch, fail) -> None:
    """`latest` moves only after the new checkpoint file is in place: a save that stops while
    writing or renaming that file leaves `latest` loading the previous checkpoint, whole."""
    from learner.checkpoint import unfinished_writes
    sac = _shared_sac()
    save_checkpoint(str(tmp_path), _state(sac, 10))
    ckpts = tmp_path / "checkpoints"
    with monkeypatch.context() as m:
        fail("ckpt-20.pt", m)
        with pytest.raises(OSError, match="injected"):
            save_checkpoint(str(tmp_path), _state(sac, 20))
    assert (ckpts / "latest").read_text() == "ckpt-10.pt\n"
    assert load_checkpoint(str(tmp_path))["counters"]["updates"] == 10
    assert sorted(os.listdir(ckpts)) == ["ckpt-10.pt", "latest"]  # the temp file removed
    assert unfinished_writes(str(ckpts)) == []
    save_checkpoint(str(tmp_path), _state(sac, 20))  # the next save works
    assert load_checkpoint(str(tmp_path))["counters"]["updates"] == 20


def test_state_digest_tells_states_apart() -> None:
    from learner.checkpoint_state import state_digest  # noqa: PLC0415
    a = {"frames": np.arange(12, dtype=np.uint8).reshape(3, 4), "rng": {"state": 5}, "n": [1, 2]}
    same = {"n": [1, 2], "rng": {"state": 5}, "frames": np.arange(12, dtype=np.uint8).reshape(3, 4)}
    assert state_digest(a) == state_digest(same)  # key order does not matter
    for change in ({"frames": a["frames"].reshape(4, 3)}, {"frames": a["frames"].astype(np.int8)},
                   {"rng": {"state": 6}}, {"n": [2, 1]}):
        assert state_digest({**a, **change}) != state_digest(a), change
