"""`fpac-train` end to end on a real DeepMind Control task (cartpole_swingup, dm_control backend).

The benchmark's 84x84 frames and render, tiny networks, 2300 env steps = 288 agent steps at action
repeat 8, ONE actor of 2 envs, a replay ratio of 1/4 (the updates at 84x84 were most of the
test's time on the CPU; a quarter of them still broadcast several versions): episodes complete, updates happen, the actors' policy version
advances, a periodic and the final evaluation (5 full 1000-step episodes each, in the evaluator
process) land at the env steps of the versions they evaluated while training went on, a
checkpoint, policy.pt (which a fresh process loads with torch.jit.load alone and acts with) and
the GIF are written, and --resume continues the counters.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from learner.checkpoint import load_checkpoint
from run_artefacts import check_artefacts
from test_train_e2e import eval_file, eval_rows, rows, run_dir, train  # noqa: F401 (fixture)

IMAGE = 84
EVAL_EPISODES = 5
SMALL = ["--task", "cartpole_swingup", "--backend", "dmc", "--image-size", str(IMAGE),
         "--num-points", "8", "--hidden-dim", "32",
         "--conv-channels", "8", "--batch-size", "16", "--initial-random-steps", "50",
         "--weights-every", "10", "--replay-ratio", "0.25", "--eval-every-env-steps", "1200",
         "--eval-episodes", str(EVAL_EPISODES),
         "--log-every-s", "1", "--actors", "1", "--envs-per-actor", "2"]  # 2 envs: lanes overlap
# Two 1000-step episodes per env (action repeat 8) plus margin; below 2 x 1200, so that the one
# periodic evaluation (at 1200) and the final one are all.
BUDGET = 2300

ACT_SNIPPET = """
import sys, torch
policy = torch.jit.load(sys.argv[1], map_location="cpu")
obs = torch.zeros((2, 6, {size}, {size}), dtype=torch.uint8)
action = policy(obs, True)
assert action.shape == (2, 1) and torch.equal(action, policy(obs, True)), action  # deterministic
assert not torch.equal(action, policy(obs, False)), "the stochastic path samples"
print("ACTS", tuple(action.shape))
"""


def rendering_works() -> bool:
    from actors.envs.render_probe import RenderingError, probe_rendering

    try:
        probe_rendering("dmc", "cartpole_swingup", image_size=IMAGE, camera=0)
    except RenderingError:
        return False
    return True


@pytest.fixture(scope="module", autouse=True)
def needs_rendering():
    if not rendering_works():
        pytest.skip("this machine cannot render MuJoCo (see fpac-actors' probe for the fix)")


def test_train_cartpole_swingup_then_resume(run_dir):  # noqa: F811
    first = train([*SMALL, "--env-steps", str(BUDGET), "--run-dir", run_dir], timeout_s=300)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    if not torch.cuda.is_available():
        assert first.stderr.count("NOTE: no GPU found") == 1  # one clear note, and it still ran
    last = rows(run_dir)[-1]
    assert last["env_steps"] >= BUDGET and last["episodes"] >= 1
    assert last["train_return"] is not None  # complete episodes reached the learner
    assert last["updates"] > 0 and last["policy_version"] > 1
    versions = [r["actor_version"] for r in rows(run_dir) if r.get("actor_version") is not None]
    assert versions and max(versions) > 1  # the actors act with newer weights than the first
    evals = eval_file(run_dir)
    assert len(evals) >= 2, "a periodic and the final evaluation must both land"
    periodic, final_eval = evals[0], evals[-1]
    assert not periodic["final"] and final_eval["final"]
    # Asked for at 1200 env steps, of the version broadcast last (weights go out every 10
    # updates), and recorded at the env steps of that version's broadcast:
    assert 0 < periodic["env_steps"] <= 1200 + 16 * 8 < final_eval["env_steps"]
    assert 0 < periodic["version"] < final_eval["version"]
    assert periodic["requested_env_steps"] >= 1200
    # Training went on while it ran: by more than the records in flight when it was asked for
    # (2 envs x 16-record chunks x action repeat 8, twice over for the queues = 512 env steps).
    assert periodic["learner_env_steps"] >= periodic["requested_env_steps"] + 512
    assert final_eval["env_steps"] == last["env_steps"]
    assert final_eval["version"] == last["policy_version"]
    for e in evals:  # complete benchmark episodes: 1000 control steps = 125 agent steps
        assert e["lengths"] == [125] * EVAL_EPISODES and len(e["returns"]) == EVAL_EPISODES
    assert [r["eval_env_steps"] for r in eval_rows(run_dir)] == [e["env_steps"] for e in evals]
    # The GIF: one episode of 125 agent steps, the reset frame and one frame per step.
    check_artefacts(run_dir, ["policy.pt", "learning_curve.png", "feature_points.gif",
                              "config.json", "metrics.csv", "tb"], "cartpole_swingup", 1, IMAGE,
                    gif_frames=126)
    stopped = load_checkpoint(run_dir)["counters"]
    assert stopped["updates"] == last["updates"]

    # policy.pt needs nothing but torch: a fresh interpreter outside the repository acts with it.
    acts = subprocess.run([sys.executable, "-c", ACT_SNIPPET.format(size=IMAGE),
                           os.path.join(run_dir, "policy.pt")], cwd="/", capture_output=True,
                          text=True, timeout=60, check=False)
    assert acts.returncode == 0 and "ACTS (2, 1)" in acts.stdout, acts.stderr[-2000:]

    # 300 more agent steps on ONE actor of 2 envs: 150 per env, longer than an episode (125 agent
    # steps), so at least one more episode completes.
    more = BUDGET + 300 * 8
    resumed = train(["--resume", run_dir, "--env-steps", str(more), "--actors", "1", "--no-gif",
                     "--eval-every-env-steps", "1000000", "--eval-episodes", "1"],
                    timeout_s=240)  # the final eval only, of one episode
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    final = load_checkpoint(run_dir)["counters"]
    assert final["env_steps"] >= more
    assert final["updates"] > stopped["updates"]
    assert final["policy_version"] > stopped["policy_version"]
    assert final["episodes"] > stopped["episodes"]
