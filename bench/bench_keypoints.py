"""How far each handcrafted keypoint lands from its own geom in a segmentation render, per domain.

For each domain's task (the PlaNet/Dreamer tasks' camera: 0, quadruped 2; 84 px), over `--steps`
uniform-random-action steps (every `--every`-th one checked): every keypoint inside the image is
projected (fpac_async/agent/keypoints.py) and its distance in pixels to the nearest pixel that the
segmentation render gives to ITS geom is measured (0: the point's pixel shows its geom; inf: the
geom is hidden everywhere, e.g. behind the body). One row per domain in
bench/results/keypoints.jsonl with bench/provenance.py's fields. Not a speed figure: the machine's
load does not change it.

    PYTHONPATH=$PWD MUJOCO_GL=egl python bench/bench_keypoints.py
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.provenance import provenance  # noqa: E402
from fpac_async.agent import keypoints as K  # noqa: E402

DOMAINS = [("cartpole", "swingup", 0), ("reacher", "easy", 0), ("cheetah", "run", 0),
           ("finger", "spin", 0), ("ball_in_cup", "catch", 0), ("walker", "walk", 0),
           ("hopper", "hop", 0), ("pendulum", "swingup", 0), ("quadruped", "walk", 2)]
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "keypoints.jsonl")


def distances(domain: str, task: str, camera: int, size: int, steps: int, every: int,
              seed: int) -> list[float]:
    """Pixel distance from each in-image keypoint to the nearest pixel of its geom."""
    from dm_control import suite  # noqa: PLC0415
    env = suite.load(domain, task, task_kwargs={"random": seed})
    env.reset()
    keypoints = K.DmcKeypoints(env.physics, domain, camera, size)
    rng = np.random.default_rng(seed)
    spec = env.action_spec()
    rows, cols = np.mgrid[0:size, 0:size]
    out = []
    for step in range(steps):
        env.step(rng.uniform(spec.minimum, spec.maximum))
        if step % every:
            continue
        seg = env.physics.render(size, size, camera_id=camera, segmentation=True)[..., 0]
        for k, (u, v) in enumerate(K.pixel_positions(keypoints, env.physics)):
            if not (-0.5 <= u < size - 0.5 and -0.5 <= v < size - 0.5):
                continue  # outside the image
            mine = seg == keypoints.geom_ids[k]
            if not mine.any():
                out.append(float("inf"))
                continue
            out.append(float(np.sqrt((cols[mine] - u) ** 2 + (rows[mine] - v) ** 2).min()))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=84)
    p.add_argument("--machine-shared", action="store_true")
    p.add_argument("--out", default=OUT)
    args = p.parse_args()
    prov = provenance()
    for domain, task, camera in DOMAINS:
        d = np.array(distances(domain, task, camera, args.image_size, args.steps, args.every,
                               args.seed))
        finite = d[np.isfinite(d)]
        row = {"bench": "keypoints", **prov,
               "settings": {"domain": domain, "task": task, "camera": camera,
                            "image_size": args.image_size, "steps": args.steps,
                            "every": args.every, "seed": args.seed,
                            "geoms": list(K.KEYPOINT_GEOMS[domain]),
                            "machine_shared": args.machine_shared},
               "points_checked": int(d.size),
               "on_own_geom": round(float(np.mean(d <= 0.71)), 4),  # within its pixel
               "within_2px": round(float(np.mean(d <= 2.0)), 4),
               "hidden": int(np.sum(~np.isfinite(d))),
               "median_px": round(float(np.median(finite)), 3) if finite.size else None,
               "max_visible_px": round(float(finite.max()), 3) if finite.size else None}
        print(json.dumps({k: row[k] for k in ("points_checked", "on_own_geom", "within_2px",
                                              "hidden", "median_px", "max_visible_px")}),
              domain)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
