"""Handcrafted keypoints: the SAC-from-keypoints baseline of the paper's Fig. 2 (section V).

"We compute the keypoints by taking the 3D locations of the center of all objects in the
environment and projecting them to the 2D pixel space of the default camera [...] relative
positions of keypoints [...] generalize better than absolute positions" (section V, first
experiment). The authors' code (dm_wrappers.KeypointsStateWrapper) projects every geom's centre
(`geom_xpos`) with camera 0's matrix at 84 x 84; here each domain names the geoms of its moving
objects (KEYPOINT_GEOMS, docs/BASELINES.md), leaving out the floor, walls and rails.

The state of K keypoints is 4K numbers, [p_1 .. p_K, v_1 .. v_K] with p_k = (x, y) and
v_k = (dx, dy), in image units (the image spans [-1, 1] along each side, x to the right, y down):
- positions relative to their mean over the K points (the paper's choice; `relative=False`
  keeps them absolute);
- velocity = current minus previous agent step's positions, BOTH projected with the CURRENT
  camera matrix, as in the authors' wrapper: the camera's own motion cancels (section V: "we use
  additional information about the movements of the camera to translate the feature points in the
  past frame to the same coordinates as the current frame"); on a fixed camera it changes nothing.
No scalar feature m_k: the authors' keypoint state has none (the paper's formula lists one).

Nothing here renders: the camera matrix is computed from the physics data (camera_matrix, the same
matrix as dm_control.mujoco.Camera(...).matrix, which would need a GL context).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

# Geoms whose centres are the keypoints, per domain (docs/BASELINES.md has the reasons).
KEYPOINT_GEOMS: dict[str, tuple[str, ...]] = {
    "cartpole": ("cart", "pole_1"),
    "reacher": ("target", "arm", "hand", "finger"),
    "cheetah": ("torso", "head", "bthigh", "bshin", "bfoot", "fthigh", "fshin", "ffoot"),
    "finger": ("proximal", "distal", "fingertip", "cap1", "cap2"),
    "ball_in_cup": ("cup_part_2", "ball"),
    "walker": ("torso", "right_thigh", "right_leg", "right_foot", "left_thigh", "left_leg",
               "left_foot"),
    "hopper": ("torso", "nose", "pelvis", "thigh", "calf", "foot"),
    "pendulum": ("pole", "mass"),
    "quadruped": ("torso", "thigh_front_left", "shin_front_left", "foot_front_left",
                  "thigh_front_right", "shin_front_right", "foot_front_right",
                  "thigh_back_right", "shin_back_right", "foot_back_right",
                  "thigh_back_left", "shin_back_left", "foot_back_left"),
    # point_reach (numpy backend): the dot and the target (actors/envs/point_reach.py).
    "point": ("dot", "target"),
}


def keypoint_state_dim(domain: str) -> int:
    """4K: K relative positions and K velocities, two numbers each."""
    return 4 * len(geoms_of(domain))


def geoms_of(domain: str) -> tuple[str, ...]:
    try:
        return KEYPOINT_GEOMS[domain]
    except KeyError:
        raise ValueError(f"no handcrafted keypoints for domain {domain!r}; known: "
                         f"{', '.join(sorted(KEYPOINT_GEOMS))}") from None


def camera_matrix(physics: Any, camera_id: int, height: int, width: int) -> np.ndarray:
    """The 3x4 matrix taking homogeneous world points to (u * w, v * w, w), u the pixel column
    and v the pixel ROW of the upright rendered image (pixel centres at integers): the matrix of
    dm_control.mujoco.Camera(physics, height, width, camera_id).matrix for a fixed or tracking
    camera, from the physics data (cam_xpos, cam_xmat, cam_fovy) without any renderer."""
    pos = physics.data.cam_xpos[camera_id]
    rot = physics.data.cam_xmat[camera_id].reshape(3, 3).T  # world -> camera axes
    fovy = physics.model.cam_fovy[camera_id]
    focal = 1.0 / np.tan(np.deg2rad(fovy) / 2.0) * height / 2.0
    # MuJoCo cameras look along -z: x is mirrored so that +x in the camera lands to the right.
    intrinsic = np.array([[-focal, 0.0, (width - 1) / 2.0],
                          [0.0, focal, (height - 1) / 2.0],
                          [0.0, 0.0, 1.0]])
    extrinsic = np.concatenate([rot, (-rot @ pos)[:, None]], axis=1)  # [R | -R p]
    return intrinsic @ extrinsic


def project(matrix: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """Pixels [K, 2] = (column, row) of world points xyz [K, 3] under a 3x4 camera matrix."""
    xyz = np.asarray(xyz, np.float64)
    homogeneous = np.concatenate([xyz, np.ones((len(xyz), 1))], axis=1)
    uvw = homogeneous @ np.asarray(matrix, np.float64).T
    return uvw[:, :2] / uvw[:, 2:3]


def to_image_units(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """(column, row) pixels -> (x, y) in [-1, 1]: the image's outer edges at -1 and +1."""
    size = np.array([width, height], np.float64)
    return (pixels + 0.5) / size * 2.0 - 1.0


def keypoint_state(xyz: np.ndarray, xyz_prev: np.ndarray, matrix: np.ndarray, height: int,
                   width: int, relative: bool = True) -> np.ndarray:
    """float32 [4K]: positions (relative to their mean) then camera-compensated velocities of
    keypoints at world positions xyz [K, 3] (now) and xyz_prev [K, 3] (the previous agent step),
    both projected with the current camera `matrix` (see the module docstring)."""
    now = to_image_units(project(matrix, xyz), height, width)
    prev = to_image_units(project(matrix, xyz_prev), height, width)
    velocity = now - prev
    if relative:
        now = now - now.mean(0, keepdims=True)
    return np.concatenate([now.ravel(), velocity.ravel()]).astype(np.float32)


class DmcKeypoints:
    """The keypoint state of one dm_control env, step after step (it keeps the previous step's
    3D positions). Construct after the env is loaded; call `reset` after each env reset."""

    def __init__(self, physics: Any, domain: str, camera_id: int, image_size: int,
                 relative: bool = True) -> None:
        names = geoms_of(domain)
        model = physics.model
        self.geom_ids = np.array([_geom_id(model, name, domain) for name in names])
        self.camera_id = int(camera_id)
        self.size = int(image_size)
        self.relative = relative
        self.dim = 4 * len(names)
        self._prev: np.ndarray | None = None

    def positions(self, physics: Any) -> np.ndarray:
        """World centres [K, 3] of the keypoint geoms now."""
        return physics.data.geom_xpos[self.geom_ids].copy()

    def matrix(self, physics: Any) -> np.ndarray:
        return camera_matrix(physics, self.camera_id, self.size, self.size)

    def reset(self, physics: Any) -> np.ndarray:
        """The state at an episode's first step: zero velocity (the authors' wrapper repeats
        the first positions)."""
        self._prev = None
        return self.step(physics)

    def step(self, physics: Any) -> np.ndarray:
        xyz = self.positions(physics)
        prev = xyz if self._prev is None else self._prev
        self._prev = xyz
        return keypoint_state(xyz, prev, self.matrix(physics), self.size, self.size,
                              self.relative)


def _geom_id(model: Any, name: str, domain: str) -> int:
    geom = model.name2id(name, "geom")
    if geom < 0:
        raise ValueError(f"{domain}: the model has no geom named {name!r}")
    return int(geom)


def pixel_positions(keypoints: DmcKeypoints, physics: Any) -> np.ndarray:
    """(column, row) pixels [K, 2] of the keypoints now (tests, figures)."""
    return project(keypoints.matrix(physics), keypoints.positions(physics))


__all__: Sequence[str] = ("KEYPOINT_GEOMS", "DmcKeypoints", "camera_matrix", "keypoint_state",
                          "keypoint_state_dim", "project", "to_image_units", "pixel_positions")
