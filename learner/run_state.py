"""A learner run's state on disk: which checkpoint a start may use, what a resume restores, and
what a checkpoint writes (the checkpoint file, then the exported policy.pt).

learner/checkpoint.py owns the file format; learner/service.py decides when to call these.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import torch

from fpac_async.agent.export import export_policy
from fpac_async.agent.sac import SAC
from fpac_async.config import ConfigError, RunConfig, to_dict
from learner.checkpoint import check_compatible, load_checkpoint, save_checkpoint, unfinished_writes
from learner.checkpoint_state import capture_rng, restore_rng, state_digest
from learner.replay import Replay
from learner.trainer import Trainer

log = logging.getLogger("learner.service")

FRESH_COUNTERS = {"agent_steps": 0, "episodes": 0, "policy_version": 0, "updates": 0}


def open_checkpoint(cfg: RunConfig, resume: bool) -> dict[str, Any] | None:
    """The checkpoint a resume starts from (checked against cfg), or None for a fresh run.
    A fresh run in a directory that holds checkpoints is refused: nothing is overwritten."""
    directory = os.path.join(cfg.run_dir, "checkpoints")
    unfinished = unfinished_writes(directory)
    if unfinished:
        log.warning("ignoring %d unfinished checkpoint write(s) in %s (a learner stopped while "
                    "writing them; the next checkpoint deletes them): %s", len(unfinished),
                    directory, ", ".join(unfinished))
    if resume:
        ckpt = load_checkpoint(cfg.run_dir)
        check_compatible(ckpt["config"], to_dict(cfg))
        return ckpt
    if os.path.exists(os.path.join(directory, "latest")):
        raise ConfigError(f"{cfg.run_dir} already holds checkpoints: pass --resume to continue "
                          f"that run, or choose another --run-dir")
    return None


def restore(ckpt: dict[str, Any] | None, cfg: RunConfig, sac: SAC, trainer: Trainer,
            replay: Replay) -> dict[str, int]:
    """Load a checkpoint into the agent, the trainer and the replay (and the random generators);
    the run's counters. Without a saved replay the trainer refills it before updating again."""
    if ckpt is None:
        return dict(FRESH_COUNTERS)
    sac.load_state_dict(ckpt["sac"])
    counters = ckpt["counters"]
    trainer.load_state_dict({"updates": counters["updates"],
                             "ratio_offset": counters.get("ratio_offset", 0)})
    if ckpt.get("replay") is not None:
        replay.load_state_dict(ckpt["replay"])
        log.info("replay restored: %d records", len(replay))
        if log.isEnabledFor(logging.DEBUG):  # hashes the whole replay: only when asked
            log.debug("replay state digest %s", state_digest(replay.state_dict()))
    elif int(counters["agent_steps"]) > 0:
        # No saved replay: refill it before updating again (with the current policy, or random
        # actions if the run stopped inside its random phase). At most half the capacity: the
        # last record of each stream is not a transition yet.
        refill = min(cfg.replay.capacity // 2, max(cfg.agent.batch_size,
                                                   cfg.replay.initial_random_steps))
        trainer.start_refill(int(counters["agent_steps"]), refill)
        log.info("resumed without a saved replay: refilling it with %d transitions of the "
                 "current policy before the next update", refill)
    restore_rng(ckpt)
    log.info("resumed from %s: %s", ckpt["path"], counters)
    return counters


def snapshot(cfg: RunConfig, sac: SAC, replay: Replay, counters: dict[str, int]) -> dict[str, Any]:
    """What a checkpoint holds (the replay too if cfg.learner.save_replay). The caller holds the
    receiver's snapshot lock: counters and replay from the same instant."""
    state: dict[str, Any] = {"config": to_dict(cfg), "sac": sac.state_dict(),
                             "counters": counters, "rng": capture_rng()}
    if cfg.learner.save_replay:
        state["replay"] = replay.state_dict()
    return state


def write_checkpoint(cfg: RunConfig, sac: SAC, state: dict[str, Any]) -> str:
    """The checkpoint file, then policy.pt replaced atomically; the checkpoint's path."""
    path = save_checkpoint(cfg.run_dir, state)
    policy_path = os.path.join(cfg.run_dir, "policy.pt")
    tmp = policy_path + ".tmp"
    torch.jit.save(export_policy(sac), tmp)
    os.replace(tmp, policy_path)  # atomic: a reader never sees half a policy
    return path
