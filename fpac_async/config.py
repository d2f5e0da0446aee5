"""Typed run configuration: one dataclass per part, task presets, JSON save/load.

Agent defaults follow the paper's Table I and, where it is silent or garbled, the authors' code
(rinuboney/FPAC); docs/FIDELITY.md lists both sources. Task table and per-task defaults:
fpac_async/tasks.py. Every ablation of section VI is a field of AgentConfig.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from fpac_async.tasks import (CAMERA_OFFSET_BACKENDS, TASK_DEFAULTS, TASKS,  # noqa: F401 (re-exported)
                               TaskSpec, task_defaults)


class ConfigError(ValueError):
    """A config value or file that cannot be used; the message says which and why."""


@dataclass
class AgentConfig:
    """The FPAC agent and its SAC learner (paper Table I)."""

    encoder: str = "fpac"
    """Observation encoder: 'fpac' (feature points), 'pixels' (SAC from pixels), 'state' (the env's
    state: DMC's, or handcrafted keypoints with --state-source keypoints) or 'pretrained' (frozen
    pretrained feature points, --pretrained)."""
    pretrained: str = ""
    """The 'pretrained' encoder's file, written by fpac-pretrain (python -m deploy.pretrain_points)."""
    num_points: int = 32
    """K, the number of feature points (one 1x1-conv output map each)."""
    fp_temperature: float = 0.5
    """beta of eq. 3: softmax temperature of the feature-point distributions."""
    softmax: str = "separable"
    """'separable' (eq. 3, the paper's default) or 'spatial' (eq. 1, full 2D softmax ablation)."""
    scalar_feature: bool = True
    """Include m_k = tanh(mean h_k) (eq. 2) in each point (ablation VI-B)."""
    velocity: bool = True
    """Append the velocity term x_t - x_{t-1} to the state (ablation VI-C)."""
    relative: bool = True
    """Centre x_t's x and y on their mean over the K points, after the velocity (ablation VI-E)."""
    camera_offset: bool = False
    """Shift the previous frame's points by the camera's pixel motion (Fig. 3; task default: on
    for cheetah, walker and hopper on the dmc backend)."""
    conv_channels: int = 32
    """Channels of the four 3x3 convolutions."""
    frame_stack: int = 2
    """Frames per observation (o_t, o_{t-1})."""
    pixels_feature_dim: int = 50
    """Width of the actor's and the critic's own Linear+LayerNorm+tanh heads on 'pixels' convs."""
    hidden_dim: int = 1024
    """Units per hidden layer of the actor and critic MLPs."""
    hidden_layers: int = 3
    """Hidden layers of the actor and critic MLPs: 3, the authors' utils.MLP(hidden_layers=2),
    which builds Linear(in, 1024) + 2 x Linear(1024, 1024) + the output layer (Table I's "2" is
    that config value; 2 is Table I read literally)."""
    lr: float = 3e-4
    """Adam learning rate of actor, critic and temperature."""
    lr_initial: float | None = None
    """If set, the learning rate of the first lr_initial_env_steps env steps (reacher: 1e-3)."""
    lr_initial_env_steps: int = 0
    """Env steps during which lr_initial applies."""
    batch_size: int = 128
    """Transitions per SAC update."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.01
    """Polyak rate of the target critic."""
    target_encoder: bool = False
    """TD targets from a Polyak-averaged target encoder; off: the target critic reads the online
    encoder's features of s' (the authors' code)."""
    target_update_every: int = 2
    """Updates between target-critic Polyak steps."""
    actor_update_every: int = 2
    """Updates between actor and temperature steps."""
    init_temperature: float = 0.1
    """Initial entropy temperature alpha."""
    target_entropy: float | None = None
    """Target entropy; None means -|A|."""
    log_std_min: float = -10.0
    """Lower bound of the actor's log standard deviation."""
    log_std_max: float = 2.0
    """Upper bound of the actor's log standard deviation."""
    log_std_bound: str = "clamp"
    """How log-std is bounded: 'clamp' (hard clamp, the authors' code) or 'tanh' (the SAC-AE/DrQ
    rescale)."""
    mlp_init: str = "authors"
    """Actor/critic MLP init: 'authors' (their utils.MLP: PyTorch's default, last layer
    U(-3e-3, 3e-3)) or 'orthogonal' (SAC-AE/DrQ)."""
    actor_features: str = "recompute"
    """Features the actor step reads: 'recompute' (the authors' fpac.py: the encoder, just
    updated by the critic step, encodes s again, without gradient) or 'reuse' (the critic step's
    features, detached, as in DrQ-v2: one encoder pass less)."""
    tanh_log_prob: str = "authors"
    """The tanh change of variables in log pi: 'authors' (their sac.py: log(1 - tanh(u)^2 + 1e-6),
    bounded at log 1e-6 per dimension) or 'exact' (2 (log 2 - u - softplus(-2u)))."""


@dataclass
class EnvConfig:
    """The environment the actors run."""

    task: str = "cartpole_swingup"
    """Task name (see `fpac_async.config.TASKS`)."""
    action_repeat: int = 0
    """Control steps per agent step; 0 means the task preset's value."""
    backend: str = "dmc"
    """'dmc' (dm_control), 'envpool' or 'numpy' (tasks that ship with the package)."""
    image_size: int = 0
    """Rendered square image side in pixels; 0 means the task preset's (84 for DMC)."""
    camera: int = -1
    """Camera id; -1 means the task preset's (0, quadruped 2)."""
    episode_control_steps: int = 0
    """Control steps per episode (a time limit, i.e. a truncation); 0 means the preset's (1000 for DMC)."""
    envs_per_actor: int = 2
    """Environments stepped by each actor process (dmc: >= 2 overlaps policy and rendering)."""
    render_quality: str = "benchmark"
    """'benchmark' (dm_control's 2048 shadow map, 4x MSAA) or 'fast' (dmc: 512 shadow map, no MSAA)."""
    camera_measure: str = "plane"
    """How actors measure the camera's pixel motion for --camera-offset (dmc backend): 'plane',
    the motion of the point where the previous optical axis meets the robot's plane y = 0 (ours),
    or 'origin', the motion of the world origin (the authors' dm_wrappers.py, for reproduction:
    on walker's pitched camera it leaves ~30 to 80 percent of the motion uncompensated; docs/FIDELITY.md)."""
    state_source: str = "default"
    """The env's low-dim state: 'default' (DMC's observation) or 'keypoints' (handcrafted keypoints,
    fpac_async/agent/keypoints.py; the SAC-keypoints baseline with --encoder state; dmc and numpy)."""


@dataclass
class ReplayConfig:
    """The learner's replay and its sampling schedule."""

    capacity: int = 100_000
    """Transitions (frames) kept in the replay."""
    initial_random_steps: int = 1000
    """Agent steps taken with uniform random actions before the first update."""
    replay_ratio: float = 1.0
    """SAC updates per agent step, enforced by the learner."""
    on_gpu: bool = False
    """Keep the replay in GPU memory instead of pinned host memory."""


@dataclass
class LearnerConfig:
    """The learner service: transport, broadcast, checkpoints, evaluation, logging."""

    bind: str = "tcp://127.0.0.1:5555"
    """Data PULL endpoint (+1 broadcast, +2 control); loopback only: tcp://*:PORT for others."""
    gpus: int = 1
    """GPUs to use (0 runs on the CPU)."""
    weights_every: int = 100
    """Updates between weight broadcasts (at most max_policy_lag // 2 while that bound is on)."""
    weights_wire: str = "f32"
    """Weights broadcasts as f32 (exact), or bf16: half the bytes, and actors, evaluators (and the
    serial runner) act with weights rounded to bf16 (fpac_async/wire/bf16.py, docs/FIDELITY.md)."""
    max_policy_lag: int = 0
    """No record acted by a policy older than this many updates is trained on (learner/lag_bound.py;
    costs the replay ratio along a run: lag-ratio bench); 0 (default): no bound."""
    actor_lead: int = 50
    """Actors step about this many updates' worth of records (plus the ratio's slack) ahead of
    the learner, however many they are (grants, learner/pacing.py); 0: off."""
    wait_for_actors: int = 0
    """A new run's first policy waits until this many actors said hello (all start together);
    0: none. A resumed run never waits."""
    checkpoint_every: int = 10_000
    """Updates between checkpoints."""
    save_replay: bool = False
    """Also write the replay into checkpoints."""
    eval_every_env_steps: int = 10_000
    """Env steps between evaluations."""
    eval_episodes: int = 10
    """Deterministic episodes per evaluation (Table I)."""
    log_every_s: float = 5.0
    """Seconds between metric rows."""
    max_message_bytes: int = 64 * 2**20
    """Messages larger than this are rejected unread."""
    compile: str = "auto"
    """How SAC updates run: none (eager), compile (torch.compile), compile-cudagraphs
    (torch.compile mode reduce-overhead), cudagraphs (whole update captured, CUDA only); auto:
    the device's default (fpac_async/agent/speed.py, docs/GPU.md)."""
    tf32: str = "auto"
    """TF32 matmuls and convolutions on CUDA: on, off, or auto (PyTorch's defaults)."""
    amp: str = "auto"
    """bf16 autocast of the SAC update (CUDA, or a CPU with AMX / AVX512-BF16): on, off, or auto
    (the device's default, fpac_async/agent/speed.py). The feature-point softmax and expectations, the
    losses, the temperature and the optimizer state stay float32."""
    channels_last: str = "auto"
    """Channels-last memory format for the encoder: on, off, or auto (the device's default)."""
    fused_adam: str = "auto"
    """Fused Adam (CUDA only): on, off, or auto (on CUDA: on)."""


@dataclass
class RunConfig:
    """A whole run: what to train, how long and where to write."""

    agent: AgentConfig = field(default_factory=AgentConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    env_steps: int = 500_000
    """Training budget in environment steps (agent steps x action repeat)."""
    seed: int = 0
    """Base seed; actors derive distinct seeds per process and env."""
    run_dir: str = "runs/default"
    """Directory for config, metrics, TensorBoard logs, checkpoints and the exported policy."""


def with_task_defaults(cfg: RunConfig) -> RunConfig:
    """cfg with its task's defaults for its backend applied (other fields keep their values)."""
    changes = {section: dataclasses.replace(getattr(cfg, section), **fields)
               for section, fields in task_defaults(cfg.env.task, cfg.env.backend).items()}
    return dataclasses.replace(cfg, **changes)


def lr_at(cfg: AgentConfig, env_steps: int) -> float:
    """The learning rate at `env_steps`: cfg.lr_initial during the first cfg.lr_initial_env_steps
    env steps (the reacher schedule of the paper's Table I), cfg.lr after."""
    if cfg.lr_initial is not None and env_steps < cfg.lr_initial_env_steps:
        return float(cfg.lr_initial)
    return float(cfg.lr)


def task_spec(name: str) -> TaskSpec:
    """The preset of a task, or a ConfigError listing the known names."""
    try:
        return TASKS[name]
    except KeyError:
        known = ", ".join(sorted(TASKS))
        raise ConfigError(f"unknown task {name!r}; known tasks: {known}") from None


def resolve(cfg: RunConfig) -> RunConfig:
    """Fill preset-dependent fields (action repeat, camera, backend) and validate choices."""
    spec = task_spec(cfg.env.task)
    env = dataclasses.replace(
        cfg.env,
        action_repeat=cfg.env.action_repeat or spec.action_repeat,
        camera=spec.camera if cfg.env.camera < 0 else cfg.env.camera,
        image_size=cfg.env.image_size or spec.image_size,
        episode_control_steps=cfg.env.episode_control_steps or spec.episode_control_steps,
        backend="numpy" if spec.backend == "numpy" else cfg.env.backend,
    )
    _check_choice("agent.encoder", cfg.agent.encoder, ("fpac", "pixels", "state", "pretrained"))
    _check_choice("env.state_source", env.state_source, ("default", "keypoints"))
    _check_choice("env.camera_measure", env.camera_measure, ("plane", "origin"))
    _check_baselines(cfg.agent, env, spec)
    _check_choice("agent.softmax", cfg.agent.softmax, ("separable", "spatial"))
    _check_choice("env.backend", env.backend, ("dmc", "envpool", "numpy"))
    _check_choice("agent.log_std_bound", cfg.agent.log_std_bound, ("clamp", "tanh"))
    _check_choice("agent.mlp_init", cfg.agent.mlp_init, ("orthogonal", "authors"))
    _check_choice("agent.actor_features", cfg.agent.actor_features, ("recompute", "reuse"))
    _check_choice("agent.tanh_log_prob", cfg.agent.tanh_log_prob, ("authors", "exact"))
    _check_choice("learner.weights_wire", cfg.learner.weights_wire, ("f32", "bf16"))
    if cfg.agent.camera_offset and env.backend not in CAMERA_OFFSET_BACKENDS:
        raise ConfigError(f"agent.camera_offset needs a backend that measures the camera's motion "
                          f"({', '.join(CAMERA_OFFSET_BACKENDS)}); {env.backend} reports zero "
                          f"offsets: use --backend dmc or --no-camera-offset")
    if cfg.agent.camera_offset and spec.domain == "quadruped":
        # Its camera 2 tracks the body's centre of mass in 3D; the actors measure camera motion
        # only for the planar robots (cheetah, walker, hopper) and would send zeros here.
        raise ConfigError("agent.camera_offset: the camera motion of quadruped's tracking camera "
                          "is not measured (only cheetah, walker and hopper); use "
                          "--no-camera-offset")
    from fpac_async.agent.speed import check_speed_choices  # noqa: PLC0415 (imports torch)
    try:
        check_speed_choices(cfg.learner)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.agent.num_points < 1 or cfg.agent.fp_temperature <= 0:
        raise ConfigError("agent.num_points must be >= 1 and agent.fp_temperature > 0")
    if env.action_repeat < 1 or env.episode_control_steps % env.action_repeat:
        raise ConfigError(f"env.episode_control_steps ({env.episode_control_steps}) must be a "
                          f"multiple of env.action_repeat ({env.action_repeat})")
    return dataclasses.replace(cfg, env=env)


def _check_baselines(agent: AgentConfig, env: EnvConfig, spec: TaskSpec) -> None:
    """The keypoints baseline's settings (docs/BASELINES.md)."""
    if env.state_source == "keypoints":
        from fpac_async.agent.keypoints import KEYPOINT_GEOMS  # noqa: PLC0415 (numpy only)
        if agent.encoder != "state":
            raise ConfigError("--state-source keypoints is the input of --encoder state (SAC on "
                              f"handcrafted keypoints); got --encoder {agent.encoder}")
        if env.backend == "envpool":
            raise ConfigError("--state-source keypoints needs the physics (--backend dmc); "
                              "envpool gives no access to it")
        if spec.domain not in KEYPOINT_GEOMS:
            raise ConfigError(f"no handcrafted keypoints for domain {spec.domain!r}")
    # --encoder pretrained: only the learner reads --pretrained (the actors get the weights with
    # the policy), so the file is checked there (pretrained_points.check_pretrained).


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def to_dict(cfg: Any) -> dict:
    """The config as plain JSON-able data."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict) -> Any:
    """Rebuild a (nested) config dataclass; unknown keys are an error, missing keys take defaults."""
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown keys {unknown}")
    return cls(**{name: from_dict(sub, value) if (sub := _dataclass_type(fields[name])) else value
                  for name, value in data.items()})


def _dataclass_type(f: dataclasses.Field) -> type | None:
    candidates = {c.__name__: c for c in (AgentConfig, EnvConfig, ReplayConfig, LearnerConfig)}
    name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    return candidates.get(name)


def config_json(cfg: RunConfig) -> str:
    """The config as the JSON text config.json holds (and --print-config prints)."""
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True)


def save_config(cfg: RunConfig, path: str) -> None:
    """Write the full config as JSON, atomically (a crash never leaves half a file)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".config-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(config_json(cfg))
    os.replace(tmp, path)


def load_config(path: str) -> RunConfig:
    """Read a config written by save_config, with a clear error for a missing or corrupt file."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"no config file at {path}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {path} is not valid JSON: {e}") from None
    return from_dict(RunConfig, data)
