"""An evaluation episode as a GIF with the learned feature points drawn on the frames (paper Fig. 6).

Uses only the exported TorchScript policy (policy.pt) and an environment backend, so it shows
exactly what the actors run.
"""
from __future__ import annotations

import numpy as np
import torch

from actors.envs import make_vec_env
from fpac_async.config import EnvConfig
from fpac_async.agent.export import script_from_bytes
from fpac_async.wire.protocol import TERMINAL, TRUNCATED

# One distinct colour per point (cycled when K is larger).
_PALETTE = np.array([[255, 60, 60], [60, 255, 60], [80, 140, 255], [255, 220, 40],
                     [255, 60, 255], [40, 240, 240], [255, 150, 40], [200, 200, 200]], np.uint8)


def draw_points(frame_hwc: np.ndarray, points: np.ndarray, scale: int = 4) -> np.ndarray:
    """Upscale an HxWx3 frame and draw a cross at each (x, y) in [-1, 1] (x along W, y along H)."""
    img = np.repeat(np.repeat(frame_hwc, scale, axis=0), scale, axis=1).copy()
    h, w = img.shape[:2]
    for k, (x, y) in enumerate(points[:, :2]):
        # Points live on linspace(-1, 1) grids spanning the image (feature_points.py).
        cx = int(round((x + 1) / 2 * (w - 1)))
        cy = int(round((y + 1) / 2 * (h - 1)))
        colour = _PALETTE[k % len(_PALETTE)]
        for d in range(-scale, scale + 1):
            if 0 <= cy < h and 0 <= cx + d < w:
                img[cy, cx + d] = colour
            if 0 <= cy + d < h and 0 <= cx < w:
                img[cy + d, cx] = colour
    return img


def record_episode_gif(policy_path: str, env_cfg: EnvConfig, out_path: str, seed: int = 12345,
                       max_frames: int = 250, fps: int = 20) -> tuple[str, float]:
    """Run one deterministic episode with the exported policy and save a GIF; returns (path, return).

    The GIF has one frame per observation: the reset frame and the frame after every agent step,
    so an episode of L agent steps gives L + 1 frames (at most `max_frames`). With the `relative`
    ablation the points are relative to their mean and are drawn around the image centre.
    """
    from PIL import Image

    with open(policy_path, "rb") as f:
        policy = script_from_bytes(f.read())  # torch.jit.load, without its deprecation warning
    env = make_vec_env(env_cfg, seed=seed, num_envs=1)
    images: list[np.ndarray] = []
    total = 0.0
    try:
        batch = env.reset()
        prev = None
        with torch.inference_mode():
            while True:
                cur = policy.points(torch.from_numpy(np.ascontiguousarray(batch.frames)))
                prev = cur if prev is None else prev  # a FIRST frame is its own predecessor
                images.append(draw_points(batch.frames[0].transpose(1, 2, 0), cur[0].numpy()))
                if batch.flags[0] & (TERMINAL | TRUNCATED) or len(images) >= max_frames:
                    break  # the episode is over (or the GIF is long enough)
                cam = torch.from_numpy(np.ascontiguousarray(batch.cam, np.float32))
                action = policy.act_from_points(cur, prev, True, cam).numpy()
                prev = cur
                batch = env.step(action)
                total += float(batch.reward[0])
    finally:
        env.close()
    pil = [Image.fromarray(im) for im in images]
    pil[0].save(out_path, save_all=True, append_images=pil[1:], duration=int(1000 / fps), loop=0)
    return out_path, total
