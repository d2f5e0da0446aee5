"""What a run's messages must look like: frame shape, action and state dims of its task.

The learner knows its shapes without building an env (dm_control is not needed on the learner
host); hellos and steps are checked against them (learner.receiver).
"""
from __future__ import annotations

from dataclasses import dataclass

from fpac_async.config import RunConfig, task_spec
from fpac_async.agent.keypoints import keypoint_state_dim

# (action_dim, state_dim) per domain, so the learner knows its shapes without building an env
# (dm_control is not needed on the learner host). Measured from dm_control 1.0.50 action and
# observation specs (state = the observation dict flattened, as actors/envs/dmc.py sends it);
# point_reach from actors/envs/point_reach.py. Hellos and steps are checked against these.
DOMAIN_DIMS: dict[str, tuple[int, int]] = {
    "cartpole": (1, 5), "reacher": (2, 6), "cheetah": (6, 17), "finger": (2, 9),
    "ball_in_cup": (2, 8), "walker": (6, 24), "hopper": (4, 15), "pendulum": (1, 3),
    "quadruped": (12, 78), "point": (2, 4),
}


@dataclass(frozen=True)
class TaskShapes:
    """What this run's messages must look like."""

    task: str
    frame_shape: tuple[int, int, int]  # one frame, (3, H, W)
    action_dim: int
    state_dim: int  # the env's low-dim state size (used by the 'state' encoder)


def task_shapes(cfg: RunConfig) -> TaskShapes:
    """Shapes of a resolved config's task (image size from cfg.env, dims from DOMAIN_DIMS)."""
    spec = task_spec(cfg.env.task)
    if spec.domain not in DOMAIN_DIMS:
        raise ValueError(f"no action/state dims known for domain {spec.domain!r}; add it to "
                         f"learner.task_shapes.DOMAIN_DIMS")
    a, d = DOMAIN_DIMS[spec.domain]
    if cfg.env.state_source == "keypoints":  # handcrafted keypoints replace the state
        d = keypoint_state_dim(spec.domain)
    size = cfg.env.image_size or spec.image_size
    return TaskShapes(cfg.env.task, (3, size, size), a, d)
