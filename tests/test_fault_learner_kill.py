"""Fault injection on the running service: kill -9 of the learner while it writes a checkpoint,
then `fpac-learner --resume`.

- The killed write leaves only a temp file: the previous checkpoint still loads, and the resumed
  learner says it ignores the unfinished write (the next save deletes it).
- The resumed learner continues from that checkpoint: counters and policy version (metrics rows),
  optimizers (Adam's step count in the final checkpoint equals the total updates), and with
  --save-replay the replay comes back exactly (its state digest, logged at resume with
  --log-level DEBUG, equals the checkpoint's; the replay's sampling RNG is part of it).
- The same actor processes, never restarted, reconnect by themselves and the run completes
  (exit 0 everywhere, final evaluation recorded).
The test hook FPAC_TEST_CHECKPOINT_PAUSE=2 stops the learner's 2nd save between its fsynced temp
file and the rename (learner/checkpoint.py); the kill lands there."""
from __future__ import annotations

import os
import signal


from fault_service import alive
from learner.checkpoint import load_checkpoint, unfinished_writes
from learner.checkpoint_state import state_digest

BUDGET = 1000
CKPT_EVERY = 30  # updates


def adam_steps(sac_state: dict, opt: str) -> int:
    steps = {int(s["step"]) for s in sac_state[opt]["state"].values()}
    assert len(steps) == 1, steps
    return steps.pop()


def test_learner_killed_mid_checkpoint_resumes_and_the_same_actors_finish_the_run(service):
    flags = ["--env-steps", str(BUDGET), "--save-replay", "--checkpoint-every", str(CKPT_EVERY)]
    first = service.start_learner(flags, env={"FPAC_TEST_CHECKPOINT_PAUSE": "2"})
    actors = service.start_actors(2)
    service.wait_for(lambda: "FPAC_TEST_CHECKPOINT_PAUSE: pausing" in service.text(
        service.learner_log(1)), "the learner to stop inside its 2nd checkpoint write",
        timeout_s=180, alive=(first, actors))
    first.kill()  # SIGKILL, with the temp file of checkpoint 2 written but not renamed
    first.wait(30)
    ckpts = os.path.join(service.run_dir, "checkpoints")
    partial = unfinished_writes(ckpts)
    assert len(partial) == 1 and partial[0].startswith(f".ckpt-{2 * CKPT_EVERY}.pt."), partial
    saved = load_checkpoint(service.run_dir)  # the previous checkpoint, whole
    assert saved["counters"]["updates"] == CKPT_EVERY
    replay_digest = state_digest(saved["replay"])
    rows_before = len(service.rows())
    actor_pids = dict(service.started())
    assert sorted(actor_pids) == ["actor0", "actor1", "evaluator0"]
    assert all(alive(pid) for pid in actor_pids.values())  # the actors outlive the learner

    second = service.start_learner(["--log-level", "DEBUG"], resume=True)  # logs the digest
    assert service.wait_exit(second, "the resumed learner", 240) == 0, service.report()
    assert service.wait_exit(actors, "fpac-actors") == 0, service.report()

    log = service.text(service.learner_log(2))
    assert f"ignoring 1 unfinished checkpoint write(s) in {ckpts}" in log and partial[0] in log
    assert f"resumed from {os.path.join(ckpts, f'ckpt-{CKPT_EVERY}.pt')}" in log
    assert f"state digest {replay_digest}" in log  # the replay, exactly as saved
    assert unfinished_writes(ckpts) == []  # the next save deleted the partial file
    # The same three processes did the whole run: none was restarted or replaced.
    assert dict(service.started()) == actor_pids, service.started()
    assert "restarting" not in service.text(service.actors_log())
    # Counters and policy version go on from the checkpoint, not from 0.
    resumed = service.rows()[rows_before:]
    c = saved["counters"]
    for key in ("env_steps", "updates", "episodes", "policy_version"):
        assert min(r[key] for r in resumed) >= c[key], (key, c, resumed[0])
    assert resumed[-1]["env_steps"] >= BUDGET and resumed[-1]["updates"] > c["updates"]
    assert any(r.get("eval_final") for r in resumed)  # the final evaluation, by the same evaluator
    # Optimizers went on too: Adam's step count covers every update of both learners.
    final = load_checkpoint(service.run_dir)
    total = final["counters"]["updates"]
    assert total > c["updates"]
    assert adam_steps(final["sac"], "critic_opt") == total == final["sac"]["num_updates"]
    assert adam_steps(saved["sac"], "critic_opt") == c["updates"]
