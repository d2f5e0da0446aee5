"""Pretrained feature points (the SAC-pretrained baseline, fpac_async/agent/pretrained_points.py,
deploy/pretrain_points.py, docs/BASELINES.md).

- Gaussian maps put their peak at the point (x along the width).
- On point_reach frames collected with a random policy, the autoencoder's reconstruction loss
  falls.
- `--encoder pretrained --pretrained PATH`: the SAC's encoder has the file's weights, is frozen
  (no parameter requires grad, none is in an optimizer) and SAC updates leave it unchanged while
  the critic changes; its exported policy caches points on the actor like fpac's.
- The pretraining command writes a file that `--encoder pretrained` trains on through the serial
  path (the service's components) on the tiny task; bad files and flags get clear errors.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

from deploy.pretrain_points import collect_frames, main as pretrain_main, train_autoencoder
from fpac_async.agent.batch import Batch
from fpac_async.config import AgentConfig, ConfigError, EnvConfig, RunConfig, resolve
from fpac_async.agent.export import PolicyModule
from fpac_async.agent.pretrained_points import (PointAutoencoder, PretrainedPointsError,
                                                check_pretrained, gaussian_maps, load_pretrained,
                                                save_pretrained)
from fpac_async.agent.sac import SAC
from learner.cli import main as learner_main

AGENT = AgentConfig(num_points=8, conv_channels=8, hidden_dim=32, hidden_layers=1, batch_size=16,
                    relative=False)
SIZE = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    env = resolve(RunConfig(env=EnvConfig(task="point_reach"))).env
    return collect_frames(env, 600, seed=0, num_envs=2)


@pytest.fixture(scope="module")
def trained(frames, tmp_path_factory):
    """(model, losses, path) after a short pretraining on point_reach frames."""
    torch.manual_seed(0)
    model = PointAutoencoder(AGENT, (SIZE, SIZE))
    losses = train_autoencoder(model, frames, updates=100, batch_size=16, lr=1e-3, seed=0)
    path = str(tmp_path_factory.mktemp("pre") / "points.pt")
    save_pretrained(path, model, AGENT, {"task": "point_reach", "losses": losses})
    return model, losses, path


def test_gaussian_maps_peak_at_their_point():
    points = torch.tensor([[[-0.5, 0.75], [1.0, -1.0]]])  # (x, y)
    maps = gaussian_maps(points, 9, 17)  # 9 rows (y), 17 columns (x)
    rows, cols = np.unravel_index(maps[0].flatten(1).argmax(1).numpy(), (9, 17))
    np.testing.assert_array_equal(cols, [4, 16])  # x = -0.5 on linspace(-1, 1, 17) is column 4
    np.testing.assert_array_equal(rows, [7, 0])  # y = 0.75 on linspace(-1, 1, 9) is row 7
    assert float(maps[0, 0, 7, 4]) == pytest.approx(1.0)


def test_collected_frames_come_from_the_random_policy(frames):
    assert frames.shape == (600, 3, SIZE, SIZE) and frames.dtype == np.uint8
    # The dot moves: most frames differ (storing one batch again and again, or only episode
    # starts, would not; at the arena's walls a random walk does repeat some dot positions).
    assert len({f.tobytes() for f in frames}) > 300


def test_reconstruction_loss_falls(trained):
    _, losses, _ = trained
    first, last = np.mean(losses[:20]), np.mean(losses[-20:])
    assert last < 0.8 * first, (first, last)


def pretrained_sac(path: str) -> SAC:
    cfg = dataclasses.replace(AGENT, encoder="pretrained", pretrained=path,
                              num_points=3, conv_channels=4)  # the file's architecture wins
    return SAC(cfg, (6, SIZE, SIZE), action_dim=2)


def test_sac_encoder_is_the_pretrained_one_and_stays_frozen(trained, frames):
    model, _, path = trained
    sac = pretrained_sac(path)
    batch_frames = torch.from_numpy(frames[:16])
    with torch.no_grad():
        np.testing.assert_allclose(sac.encoder.points(batch_frames),
                                   model.points_net.points(batch_frames), atol=1e-6)
    assert sac.encoder.num_points == AGENT.num_points
    assert not any(p.requires_grad for p in sac.encoder.parameters())
    encoder_ids = {id(p) for p in sac.encoder.parameters()}
    for opt in (sac.critic_opt, sac.actor_opt, sac.alpha_opt):
        assert not encoder_ids & {id(p) for g in opt.param_groups for p in g["params"]}
    before = {k: v.clone() for k, v in sac.encoder.state_dict().items()}
    critic_before = [p.clone() for p in sac.critic.parameters()]
    rng = np.random.default_rng(0)
    for _ in range(5):
        idx = rng.integers(0, len(frames) - 2, 16)
        obs = torch.from_numpy(np.concatenate([frames[idx], frames[idx + 1]], 1))
        next_obs = torch.from_numpy(np.concatenate([frames[idx + 1], frames[idx + 2]], 1))
        batch = Batch(obs=obs, action=torch.rand(16, 2) * 2 - 1, reward=torch.randn(16),
                      next_obs=next_obs, discount=torch.ones(16))
        sac.update(batch)
    for name, value in sac.encoder.state_dict().items():
        assert torch.equal(value, before[name]), f"SAC updates changed the frozen {name}"
        assert getattr(dict(sac.encoder.named_parameters()).get(name), "grad", None) is None
    assert any(not torch.equal(a, b) for a, b in zip(critic_before, sac.critic.parameters()))
    assert PolicyModule(sac.encoder, sac.actor).has_points  # actors cache points like fpac's


def test_bad_pretrained_files_and_flags_get_clear_errors(trained, tmp_path):
    _, _, path = trained
    # Actors resolve --encoder pretrained without the file (they never read it); the learner's
    # CLI refuses a run without one before starting anything.
    resolve(RunConfig(agent=AgentConfig(encoder="pretrained"), env=EnvConfig(task="point_reach")))
    with pytest.raises(ConfigError, match="--pretrained PATH"):
        check_pretrained(AgentConfig(encoder="pretrained"))
    check_pretrained(AgentConfig(encoder="fpac"))  # other encoders need no file
    run_dir = str(tmp_path / "run")
    assert learner_main(["--task", "point_reach", "--gpus", "0", "--encoder", "pretrained",
                         "--pretrained", str(tmp_path / "missing.pt"), "--run-dir", run_dir]) == 2
    assert not os.path.exists(run_dir)
    with pytest.raises(PretrainedPointsError, match="no pretrained-points file"):
        pretrained_sac(str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(PretrainedPointsError, match="not a readable"):
        load_pretrained(str(tmp_path / "junk.pt"))
    with pytest.raises(PretrainedPointsError, match="trained on"):
        SAC(dataclasses.replace(AGENT, encoder="pretrained", pretrained=path), (6, 84, 84), 2)


@pytest.mark.slow
def test_pretrain_command_then_sac_on_its_points_trains_serially(tmp_path, monkeypatch):
    from deploy.serial import run_serial, tiny_config  # noqa: PLC0415
    out = str(tmp_path / "pr.pt")
    code = pretrain_main(["--task", "point_reach", "--out", out, "--frames", "1000",
                          "--updates", "50", "--batch-size", "16", "--lr", "1e-3",
                          "--device", "cpu", "--log-every", "0"])
    assert code == 0 and os.path.exists(out)
    data = load_pretrained(out)
    assert data["meta"]["frames"] == 1000 and len(data["meta"]["losses"]) == 50
    losses = data["meta"]["losses"]
    assert np.mean(losses[-10:]) < 0.9 * np.mean(losses[:10]), losses  # the command trained
    assert data["architecture"]["num_points"] == 16  # point_reach's task default
    cfg = tiny_config(seed=0)
    cfg = resolve(dataclasses.replace(
        cfg, agent=dataclasses.replace(cfg.agent, encoder="pretrained", pretrained=out),
        replay=dataclasses.replace(cfg.replay, initial_random_steps=200)))
    built: list[tuple[SAC, list[torch.Tensor]]] = []  # the serial path's SAC, its first actor

    def build(*args, **kwargs) -> SAC:
        sac = SAC(*args, **kwargs)
        built.append((sac, [p.detach().clone() for p in sac.actor.parameters()]))
        return sac
    monkeypatch.setattr("deploy.serial.SAC", build)
    result = run_serial(cfg, agent_steps=500, eval_every=500, eval_episodes=2,
                        log=lambda line: None)
    assert result["updates"] == 300
    assert np.isfinite(result["eval_returns"][-1][1])
    (sac, actor_before), = built
    # SAC ran on the command's points: its encoder is the file's, unchanged by 300 updates...
    trained_encoder = sac.encoder.state_dict()
    assert trained_encoder.keys() == data["encoder"].keys()
    for name, value in data["encoder"].items():
        assert torch.equal(trained_encoder[name], value), name
    # ...and the actor on top of them trained.
    assert all(not torch.equal(a, b) for a, b in zip(actor_before, sac.actor.parameters()))
    assert pretrain_main(["--task", "point_reach", "--out", out, "--frames", "1"]) == 2


@pytest.mark.slow
def test_fpac_train_runs_sac_on_pretrained_points_through_the_service(trained, tmp_path):
    # The real service: the learner reads the file; the actors get the frozen encoder with the
    # policy (they are given no --pretrained at all).
    import json  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    _, _, path = trained
    run_dir = str(tmp_path / "run")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-m", "deploy.train_cli", "--task", "point_reach", "--encoder",
         "pretrained", "--pretrained", path, "--env-steps", "700", "--actors", "1", "--gpus", "0",
         "--replay-ratio", "0.25", "--no-gif", "--run-dir", run_dir],
        cwd=repo, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        last = [json.loads(line) for line in f][-1]
    assert last["env_steps"] >= 700 and last["updates"] > 0
    # The run's final encoder is still the file's.
    from learner.checkpoint import load_checkpoint  # noqa: PLC0415
    state = load_checkpoint(run_dir)  # the latest
    encoder = state["sac"]["encoder"]
    for name, value in load_pretrained(path)["encoder"].items():
        assert torch.equal(encoder[name].cpu(), value), name
