"""The files a finished fpac-train run leaves, checked by what is in them (tests/test_train_e2e.py,
tests/test_train_dmc.py): a file that exists but holds nothing useful fails here.

check_artefacts(run_dir, names, task, action_dim, image_size, gif_frames) checks each named file:
- config.json: the run's config (its task);
- metrics.csv: one row per metrics.jsonl row, the same env steps;
- tb: TensorBoard scalars up to the last row's env steps (returns, updates);
- policy.pt: loads with torch.jit.load and acts deterministically with the run's action size;
- learning_curve.png: the two panels (1100 x 400) with the train and the eval series drawn;
- feature_points.gif: an episode, one 50 ms frame per observation (gif_frames of them).
"""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import torch

from fpac_async.config import load_config

# matplotlib's first two colours: the train series (C0) and the eval series (C1).
SERIES_COLOURS = ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E))


def curve_series_pixels(path: str) -> tuple[tuple[int, int], list[int]]:
    """A learning-curve PNG's size and its pixel counts near each series colour."""
    from PIL import Image  # noqa: PLC0415

    with Image.open(path) as im:
        assert im.format == "PNG", im.format
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3).astype(int)
        size = im.size
    return size, [int((np.abs(pixels - c).sum(-1) < 30).sum()) for c in SERIES_COLOURS]


def _jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def check_artefacts(run_dir: str, names: list[str], task: str, action_dim: int, image_size: int,
                    gif_frames: int = 0) -> None:
    rows = _jsonl(os.path.join(run_dir, "metrics.jsonl"))
    assert rows, "metrics.jsonl is empty"
    last_steps = rows[-1]["env_steps"]
    for name in names:
        path = os.path.join(run_dir, name)
        assert os.path.exists(path), name
        if name == "config.json":
            assert load_config(path).env.task == task
        elif name == "metrics.csv":
            with open(path, newline="") as f:
                table = list(csv.DictReader(f))
            assert len(table) == len(rows), (len(table), len(rows))
            assert [int(r["env_steps"]) for r in table] == [r["env_steps"] for r in rows]
        elif name == "tb":
            from tensorboard.backend.event_processing.event_accumulator import (  # noqa: PLC0415
                EventAccumulator)
            acc = EventAccumulator(path)
            acc.Reload()
            assert {"charts/episodic_return", "charts/updates"} <= set(acc.Tags()["scalars"])
            assert acc.Scalars("charts/updates")[-1].step == last_steps
        elif name == "policy.pt":
            policy = torch.jit.load(path, map_location="cpu")
            obs = torch.zeros((2, 6, image_size, image_size), dtype=torch.uint8)
            action = policy(obs, True)
            assert action.shape == (2, action_dim) and torch.equal(action, policy(obs, True))
        elif name == "learning_curve.png":
            size, series = curve_series_pixels(path)
            assert size == (1100, 400) and min(series) > 100, (size, series)
        elif name == "feature_points.gif":
            from PIL import Image, ImageSequence  # noqa: PLC0415
            with Image.open(path) as im:
                assert im.size == (4 * image_size, 4 * image_size), im.size
                ms = sum(f.info["duration"] for f in ImageSequence.Iterator(im))
            assert ms == 50 * gif_frames, (ms, gif_frames)
        else:
            raise ValueError(f"no check for {name}")
