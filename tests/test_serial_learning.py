"""FPAC learns point_reach: the service's components run serially in one process (deploy/serial.py).

This is the end-to-end learning check on CPU: env backend -> actor policy (exported TorchScript)
-> replay stream records -> trainer at the replay ratio -> SAC -> weights back to the actor.

Reward is -distance to the centre each step, so the best possible return is at most 0 and a
uniform random policy scores about -39 over 50 steps. The test asks the final deterministic
evaluation to close at least half of the gap between the random policy (measured here on the same
evaluation episodes) and 0. Trials (bench/results/tiny_learning.jsonl; random about -37 to -43, so
thresholds about -19 to -21): on the current agent (2026-12-06, evaluations every 500 agent steps)
seeds 0 / 1 / 2 scored -5.6 / -10.3 / -4.1 after 500 updates and -4.2 / -3.5 / -5.6 after 1000 (this
test's budget: 1500 agent steps, 1000 updates); at commit d4fdf84 seeds 1-4 scored -3.7 to -10.1
after 1000 updates. 2500 agent steps (the budget until 2026-12-06) cost twice the time for no
stronger check.
"""
from __future__ import annotations

import pytest
import torch

from deploy.serial import run_serial, tiny_config

AGENT_STEPS = 1500
EVAL_EPISODES = 10


@pytest.mark.slow
def test_fpac_learns_point_reach_serially() -> None:
    threads = torch.get_num_threads()
    # One thread: deterministic, and on shared cores several times faster than two (measured).
    torch.set_num_threads(1)
    try:
        result = run_serial(tiny_config(seed=0), agent_steps=AGENT_STEPS,
                            eval_every=AGENT_STEPS, eval_episodes=EVAL_EPISODES, log=print)
    finally:
        torch.set_num_threads(threads)
    (env_steps, final), = result["eval_returns"][-1:]
    random_return = result["random_return"]
    assert env_steps == AGENT_STEPS  # point_reach: action repeat 1
    assert result["updates"] == AGENT_STEPS - tiny_config().replay.initial_random_steps
    assert random_return < -25.0  # sanity: random wanders far from the centre
    best_possible = 0.0
    threshold = random_return + 0.5 * (best_possible - random_return)
    assert final > threshold, (f"final eval return {final:.2f} did not beat {threshold:.2f} "
                               f"(random {random_return:.2f})")
