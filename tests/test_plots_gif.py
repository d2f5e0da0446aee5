"""deploy.plots (learning curve PNG) and deploy.feature_point_gif (episode GIF with points drawn)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from actors.envs.point_reach import BACKGROUND, DOT_COLOUR, TARGET_COLOUR
from deploy.feature_point_gif import _PALETTE, draw_points, record_episode_gif
from deploy.plots import plot_learning_curve, read_metrics
from fpac_async.config import AgentConfig, EnvConfig, RunConfig, resolve
from fpac_async.agent.export import export_policy, script_to_bytes
from fpac_async.agent.sac import SAC
from run_artefacts import curve_series_pixels

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_rows(path: str, rows: list[dict], torn_tail: str = "") -> None:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.write(torn_tail)


def test_learning_curve_png_from_synthetic_metrics(tmp_path):
    rows = [{"time": 1000.0 + 30 * i, "env_steps": 1000 * i, "train_return": -50.0 + 5 * i,
             "eval_return": (-45.0 + 5 * i) if i % 2 else None} for i in range(8)]
    for r in rows[1::2]:  # an evaluation's own row
        r["eval_env_steps"] = r["env_steps"]
    write_rows(str(tmp_path / "metrics.jsonl"), rows, torn_tail='{"time": 12')  # killed mid-write
    assert len(read_metrics(str(tmp_path / "metrics.jsonl"))) == 8  # the torn line is skipped
    out = plot_learning_curve(str(tmp_path))
    assert out == str(tmp_path / "learning_curve.png")
    with open(out, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    size, series = curve_series_pixels(out)
    assert size == (1100, 400)  # figsize (11, 4) at 100 dpi
    assert min(series) > 200, series  # both series are drawn, in both panels


def test_evaluations_are_plotted_at_the_env_steps_of_the_evaluated_policy(tmp_path, monkeypatch):
    """An evaluation finishes later than the policy it evaluated was broadcast: its point sits at
    eval_env_steps, once (rows carry eval_return forward without eval_env_steps)."""
    import matplotlib.figure  # noqa: PLC0415

    rows = [{"time": 1000.0 + 60 * i, "env_steps": 1000 * i, "train_return": -50.0 + i}
            for i in range(7)]
    for i in range(3, 7):  # the first evaluation lands at row 3, the second at row 5
        rows[i]["eval_return"] = -30.0 if i < 5 else -20.0
    rows[3]["eval_env_steps"], rows[5]["eval_env_steps"] = 2000, 4000
    write_rows(str(tmp_path / "metrics.jsonl"), rows)
    figures = []
    real_savefig = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, *a, **k: (figures.append(fig), real_savefig(fig, *a, **k)))
    plot_learning_curve(str(tmp_path))
    steps_ax, minutes_ax = figures[0].axes
    evals = [line for line in steps_ax.lines if "eval" in line.get_label()]
    assert len(evals) == 1
    assert list(evals[0].get_xdata()) == [2000, 4000]
    assert list(evals[0].get_ydata()) == [-30.0, -20.0]
    train = [line for line in steps_ax.lines if "train" in line.get_label()][0]
    assert list(train.get_xdata()) == [1000 * i for i in range(7)]
    minutes = [line for line in minutes_ax.lines if "eval" in line.get_label()][0]
    assert list(minutes.get_xdata()) == [3.0, 5.0]  # when the result came in


def test_learning_curve_nothing_to_plot(tmp_path):
    assert plot_learning_curve(str(tmp_path)) is None  # no metrics.jsonl yet
    write_rows(str(tmp_path / "metrics.jsonl"), [])
    assert plot_learning_curve(str(tmp_path)) is None
    assert not (tmp_path / "learning_curve.png").exists()


def test_draw_points_hand_computed_pixels():
    frame = np.zeros((8, 8, 3), np.uint8)
    # (x, y) in [-1, 1]: x along W, y along H; corners map to the corner pixels.
    points = np.array([[-1.0, -1.0, 0.3], [1.0, 1.0, 0.0], [1.0, -1.0, 0.0]], np.float32)
    img = draw_points(frame, points, scale=2)
    assert img.shape == (16, 16, 3)
    assert (img[0, 0] == _PALETTE[0]).all() and (img[0, 2] == _PALETTE[0]).all()
    assert (img[2, 0] == _PALETTE[0]).all()
    assert (img[15, 15] == _PALETTE[1]).all() and (img[13, 15] == _PALETTE[1]).all()
    assert (img[0, 15] == _PALETTE[2]).all()  # x = +1 -> last column, y = -1 -> first row
    assert (img[3, 3] == 0).all()  # outside every cross: the (upscaled) frame is untouched
    assert (frame == 0).all()  # the input frame is not modified


@pytest.fixture(scope="module")
def point_reach_policy(tmp_path_factory) -> tuple[str, EnvConfig, int]:
    torch.manual_seed(0)
    agent = AgentConfig(num_points=4, hidden_dim=32, conv_channels=8, batch_size=8)
    cfg = resolve(RunConfig(agent=agent, env=EnvConfig(task="point_reach")))
    size = cfg.env.image_size
    sac = SAC(cfg.agent, (3 * agent.frame_stack, size, size), 2, "cpu")
    with torch.no_grad():  # the mean action pinned to about (+1, +1): the dot visibly moves
        last = sac.actor.trunk[-1]
        last.weight[:2] = 0.0
        last.bias[:2] = 3.0
    path = str(tmp_path_factory.mktemp("policy") / "policy.pt")
    with open(path, "wb") as f:
        f.write(script_to_bytes(export_policy(sac)))
    return path, cfg.env, agent.num_points


def gif_frames(path: str) -> tuple[list[np.ndarray], list[int]]:
    """The distinct frames and their durations (ms). Pillow merges a frame identical to the
    previous one into it (adding the durations), so the episode's length is in the durations."""
    from PIL import Image, ImageSequence

    frames, durations = [], []
    with Image.open(path) as im:
        for f in ImageSequence.Iterator(im):
            frames.append(np.asarray(f.convert("RGB")))
            durations.append(f.info["duration"])
    return frames, durations


def test_episode_gif_frames_and_points(point_reach_policy, tmp_path):
    policy, env_cfg, k = point_reach_policy
    out, ret = record_episode_gif(policy, env_cfg, str(tmp_path / "ep.gif"), seed=3)
    assert out == str(tmp_path / "ep.gif")
    frames, durations = gif_frames(out)
    # point_reach: 50 agent steps per episode -> the reset frame + 50 frames, 50 ms each (20 fps).
    assert sum(durations) == 50 * (env_cfg.episode_control_steps // env_cfg.action_repeat + 1)
    # One frame per step: the dot runs up and to the right (the pinned action) a new frame each
    # step until it stops in the corner, where the last frame holds the rest of the episode.
    dot = [np.argwhere((f == DOT_COLOUR).all(-1)).mean(0) for f in frames]  # (row, column)
    assert len(frames) >= 5 and set(durations[:-1]) == {50}, durations
    assert all(b[0] <= a[0] and b[1] > a[1] for a, b in zip(dot, dot[1:])), dot
    assert frames[0].shape == (4 * env_cfg.image_size, 4 * env_cfg.image_size, 3)
    assert -100.0 < ret < 0.0  # reward = -distance (< 2 sqrt 2) per step over 50 steps
    scene = {tuple(c) for c in (BACKGROUND, TARGET_COLOUR, DOT_COLOUR)}
    drawn = [tuple(c) for c in _PALETTE[:k]]
    assert not scene & set(drawn)
    for f in frames:
        colours = {tuple(c) for c in f.reshape(-1, 3)}
        assert colours & set(drawn), "no feature point drawn on a frame"


def test_episode_gif_max_frames(point_reach_policy, tmp_path):
    policy, env_cfg, _ = point_reach_policy
    out, _ = record_episode_gif(policy, env_cfg, str(tmp_path / "short.gif"), max_frames=7,
                                fps=10)
    assert sum(gif_frames(out)[1]) == 7 * 100


def test_the_learning_curve_is_titled_with_task_encoder_and_seed(tmp_path):
    """Issue 20: the title was the run folder's name ('run')."""
    from deploy.plots import run_title
    from fpac_async.config import EnvConfig, RunConfig, save_config

    run = tmp_path / "run"
    run.mkdir()
    assert run_title(str(run)) == "run"  # no config: the folder's name
    save_config(RunConfig(seed=3, env=EnvConfig(task="point_reach")), str(run / "config.json"))
    assert run_title(str(run)) == "point_reach, fpac encoder, seed 3"
