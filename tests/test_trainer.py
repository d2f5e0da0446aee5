"""Replay-ratio accounting (hand-computed cases) and the Trainer on a tiny real SAC and Replay."""
from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from fpac_async.config import AgentConfig, ReplayConfig, lr_at
from fpac_async.agent.sac import SAC
from learner.replay import Replay
from learner.trainer import ReplayRatio, Trainer

H = W = 32
A = 2


# ------------------------------------------------------------------------- ReplayRatio
def test_ratio_one_owes_one_update_per_step_after_initial() -> None:
    r = ReplayRatio(1.0, initial_agent_steps=100, slack_updates=4)
    assert r.owed(0, 0) == 0
    assert r.owed(99, 0) == 0  # still in the random phase
    assert r.owed(100, 0) == 0  # floor(1 * 0)
    assert r.owed(101, 0) == 1
    assert r.owed(150, 0) == 50
    assert r.owed(150, 50) == 0
    assert r.owed(150, 60) == 0  # never negative


def test_ratio_half_and_two_floor_exactly() -> None:
    half = ReplayRatio(0.5, initial_agent_steps=10)
    assert [half.owed(10 + k, 0) for k in range(6)] == [0, 0, 1, 1, 2, 2]
    two = ReplayRatio(2, initial_agent_steps=10)
    assert [two.owed(10 + k, 0) for k in range(4)] == [0, 2, 4, 6]
    assert two.owed(13, 5) == 1


def test_ratio_has_no_float_drift() -> None:
    # 0.3 as a float is 0.29999999999999998890: a float product would give floor(2.9999...) = 2.
    r = ReplayRatio(0.3, initial_agent_steps=0)
    assert r.ratio == Fraction(3, 10)
    assert r.owed(10, 0) == 3
    assert r.owed(10_000_000, 0) == 3_000_000
    third = ReplayRatio(1 / 3, initial_agent_steps=0)
    assert third.owed(3, 0) == 1 and third.owed(3_000_000_000, 0) == 1_000_000_000


def test_admit_boundary() -> None:
    # admit while agent_steps <= initial + (updates + slack) / ratio
    r = ReplayRatio(1.0, initial_agent_steps=100, slack_updates=4)
    assert r.admit(0, 0)
    assert r.admit(104, 0)  # 104 <= 100 + 4
    assert not r.admit(105, 0)
    assert r.admit(105, 1)
    half = ReplayRatio(0.5, initial_agent_steps=100, slack_updates=4)
    assert half.admit(108, 0)  # 108 <= 100 + 4 / 0.5
    assert not half.admit(109, 0)
    assert half.admit(110, 1)  # 100 + 5 / 0.5 = 110
    assert not half.admit(111, 1)
    two = ReplayRatio(2.0, initial_agent_steps=100, slack_updates=4)
    assert two.admit(102, 0)  # 100 + 4 / 2
    assert not two.admit(103, 0)
    assert two.admit(103, 2)  # 100 + 6 / 2


def test_ratio_rejects_negative() -> None:
    with pytest.raises(ValueError, match="ratio"):
        ReplayRatio(-0.5, 10)


# ------------------------------------------------------------------------------ Trainer
def _tiny_cfg(**kw) -> AgentConfig:
    return AgentConfig(hidden_dim=32, num_points=4, conv_channels=8, batch_size=8, **kw)


def _filled_replay(records: int = 40, device: str | torch.device = "cpu") -> Replay:
    rng = np.random.default_rng(0)
    replay = Replay(capacity=64, frame_shape=(3, H, W), action_dim=A, batch_size=8, seed=0,
                    device=device)
    flags = np.zeros(records, np.uint8)
    flags[0] = 1  # FIRST
    replay.add((0, 0), 0, rng.integers(0, 256, (records, 3, H, W), dtype=np.uint8),
               rng.uniform(-1, 1, (records, A)).astype(np.float32),
               rng.normal(size=records).astype(np.float32), flags)
    return replay


def _trainer(cfg: AgentConfig, ratio: float = 1.0, initial: int = 10,
             device: str | torch.device = "cpu"):
    torch.manual_seed(0)
    sac = SAC(cfg, (6, H, W), A, device)
    rcfg = ReplayConfig(capacity=64, initial_random_steps=initial, replay_ratio=ratio)
    return sac, Trainer(sac, _filled_replay(device=device), cfg, rcfg, batch_size=8,
                        device=device)


def test_trainer_runs_exactly_the_owed_updates_in_bounded_chunks(device) -> None:
    sac, trainer = _trainer(_tiny_cfg(), ratio=0.5, initial=10, device=device)
    assert trainer.overlap == (device.type == "cuda")  # side-stream prefetch on CUDA
    assert trainer.train(agent_steps=9, env_steps=9, max_updates=64) is None  # random phase
    assert trainer.train(agent_steps=11, env_steps=11, max_updates=64) is None  # floor(0.5) = 0
    out = trainer.train(agent_steps=17, env_steps=17, max_updates=2)  # owed floor(3.5) = 3
    assert out is not None and out["updates_run"] == 2.0
    assert trainer.updates == 2 and sac.num_updates == 2
    out = trainer.train(agent_steps=17, env_steps=17, max_updates=2)
    assert out is not None and out["updates_run"] == 1.0
    assert trainer.updates == 3 and sac.num_updates == 3
    assert trainer.train(agent_steps=17, env_steps=17, max_updates=2) is None
    assert set(out) >= {"critic_loss", "actor_loss", "alpha", "lr", "updates_run"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())
    assert trainer.admit(10 + 2 * (3 + 64)) and not trainer.admit(10 + 2 * (3 + 64) + 1)


def test_trainer_metrics_are_means_over_the_chunk(device) -> None:
    calls = []

    class FakeSAC:
        def update(self, batch):
            calls.append(batch.batch_size)
            return {"critic_loss": torch.tensor(float(len(calls)))}

        def set_lr(self, lr: float) -> None:
            pass

    cfg = _tiny_cfg()
    trainer = Trainer(FakeSAC(), _filled_replay(device=device), cfg,
                      ReplayConfig(initial_random_steps=0, replay_ratio=1.0), batch_size=8,
                      device=device)
    out = trainer.train(agent_steps=4, env_steps=4, max_updates=10)
    assert calls == [8, 8, 8, 8]
    assert out is not None and out["critic_loss"] == pytest.approx((1 + 2 + 3 + 4) / 4)


def test_lr_schedule_switches_at_the_configured_env_step() -> None:
    cfg = _tiny_cfg(lr=1e-3, lr_initial=3e-4, lr_initial_env_steps=100)
    assert lr_at(cfg, 0) == 3e-4 and lr_at(cfg, 99) == 3e-4 and lr_at(cfg, 100) == 1e-3
    assert lr_at(dataclasses.replace(cfg, lr_initial=None), 0) == 1e-3
    sac, trainer = _trainer(cfg, ratio=1.0, initial=0)
    set_calls = []
    original = sac.set_lr
    sac.set_lr = lambda lr: (set_calls.append(lr), original(lr))  # type: ignore[method-assign]
    out = trainer.train(agent_steps=1, env_steps=99, max_updates=8)
    assert out is not None and out["lr"] == 3e-4
    trainer.train(agent_steps=2, env_steps=99, max_updates=8)
    assert set_calls == [3e-4]  # set once, not again while unchanged
    out = trainer.train(agent_steps=3, env_steps=100, max_updates=8)
    assert out is not None and out["lr"] == 1e-3 and set_calls == [3e-4, 1e-3]
    for opt in (sac.critic_opt, sac.actor_opt, sac.alpha_opt):
        assert all(g["lr"] == 1e-3 for g in opt.param_groups)


def test_trainer_state_restores_the_update_counter() -> None:
    _, trainer = _trainer(_tiny_cfg(), ratio=1.0, initial=0)
    trainer.load_state_dict({"updates": 5})
    assert trainer.owed(7) == 2 and trainer.state_dict() == {"updates": 5, "ratio_offset": 0}


def test_overlap_needs_cuda() -> None:
    cfg = _tiny_cfg()
    with pytest.raises(ValueError, match="CUDA"):
        Trainer(object(), _filled_replay(), cfg, ReplayConfig(), overlap=True)  # type: ignore


def test_ratio_zero_runs_no_updates_and_admits_everything():
    rr = ReplayRatio(0, initial_agent_steps=10)
    assert rr.owed(10**6, 0) == 0 and rr.due(10**6) == 0
    assert rr.admit(10**9, 0)
    with pytest.raises(ValueError, match=">= 0"):
        ReplayRatio(-1, 0)


def test_resume_without_replay_refills_before_updating_and_owes_nothing_for_it() -> None:
    """A resume at 500 agent steps, 488 updates (2 owed), with an empty replay: no update until
    the replay holds the refill size, every step admitted meanwhile, and afterwards only the 2
    owed updates, not one per refill step; a checkpoint keeps the offset."""
    cfg = _tiny_cfg()
    rcfg = ReplayConfig(capacity=64, initial_random_steps=10, replay_ratio=1.0)
    empty = Replay(capacity=64, frame_shape=(3, H, W), action_dim=A, batch_size=8, seed=0)
    torch.manual_seed(0)
    trainer = Trainer(SAC(cfg, (6, H, W), A), empty, cfg, rcfg, batch_size=8)
    trainer.load_state_dict({"updates": 488})
    trainer.start_refill(agent_steps=500, size=40)
    assert trainer.refilling and trainer.admit(10**6)  # the ratio alone would refuse this
    rng = np.random.default_rng(1)
    flags = np.zeros(30, np.uint8)
    flags[0] = 1
    empty.add((0, 0), 0, rng.integers(0, 256, (30, 3, H, W), dtype=np.uint8),
              rng.uniform(-1, 1, (30, A)).astype(np.float32), np.zeros(30, np.float32), flags)
    assert not trainer.poll_refill(530)  # 29 transitions < 40
    assert trainer.train(agent_steps=530, env_steps=530) is None
    empty.add((0, 0), 30, rng.integers(0, 256, (20, 3, H, W), dtype=np.uint8),
              rng.uniform(-1, 1, (20, A)).astype(np.float32), np.zeros(20, np.float32),
              np.zeros(20, np.uint8))
    assert trainer.poll_refill(550)
    out = trainer.train(agent_steps=550, env_steps=550)
    assert out is not None and out["updates_run"] == 2.0 and not trainer.refilling
    assert trainer.state_dict() == {"updates": 490, "ratio_offset": 50}
    assert not trainer.admit(550 + 64 + 1) and trainer.admit(550 + 64)  # the ratio again
    again = Trainer(SAC(cfg, (6, H, W), A), empty, cfg, rcfg, batch_size=8)
    again.load_state_dict(trainer.state_dict())
    assert again.owed(560) == 10  # one update per step after the refill, as before
