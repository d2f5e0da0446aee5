import argparse
import dataclasses
import json

import pytest

from fpac_async import config as C
from fpac_async.cli_args import (SECTIONS, add_config_args, config_from_args, field_docs,
                                 run_config)


def test_table1_defaults():
    a = C.AgentConfig()
    # Table I's "hidden layers 2" is the authors' utils.MLP(hidden_layers=2): three Linear(., 1024)
    assert (a.hidden_layers, a.hidden_dim, a.lr, a.batch_size) == (3, 1024, 3e-4, 128)
    assert (a.mlp_init, a.actor_features, a.tanh_log_prob) == ("authors", "recompute", "authors")
    assert (a.relative, a.camera_offset, a.target_encoder) == (True, False, False)
    assert (a.log_std_min, a.log_std_max, a.log_std_bound) == (-10.0, 2.0, "clamp")
    assert (a.tau, a.target_update_every, a.actor_update_every) == (0.01, 2, 2)
    assert (a.init_temperature, a.gamma, a.num_points, a.fp_temperature) == (0.1, 0.99, 32, 0.5)
    r = C.ReplayConfig()
    assert (r.capacity, r.initial_random_steps, r.replay_ratio) == (100_000, 1000, 1.0)
    assert C.LearnerConfig().eval_episodes == 10


def test_presets_planet_and_dreamer():
    planet = {n: t.action_repeat for n, t in C.TASKS.items() if t.benchmark == "planet"}
    assert planet == {"cartpole_swingup": 8, "reacher_easy": 4, "cheetah_run": 4,
                      "finger_spin": 2, "ball_in_cup_catch": 4, "walker_walk": 2}
    dreamer = [t for t in C.TASKS.values() if t.benchmark == "dreamer"]
    assert len(dreamer) == 9 and all(t.action_repeat == 2 for t in dreamer)
    assert C.TASKS["quadruped_walk"].camera == 2
    moving = {n for n, t in C.TASKS.items() if t.camera_moves}
    assert {"cheetah_run", "walker_walk", "hopper_hop"} <= moving
    assert "cartpole_swingup" not in moving


def test_unknown_task_is_a_clear_error():
    with pytest.raises(C.ConfigError, match="unknown task 'cartpole_swing'.*cartpole_swingup"):
        C.task_spec("cartpole_swing")


def test_resolve_fills_preset_values_and_validates():
    cfg = C.resolve(C.RunConfig(env=C.EnvConfig(task="walker_walk")))
    assert (cfg.env.action_repeat, cfg.env.camera, cfg.env.image_size) == (2, 0, 84)
    assert cfg.env.episode_control_steps == 1000
    tiny = C.resolve(C.RunConfig(env=C.EnvConfig(task="point_reach")))
    assert (tiny.env.backend, tiny.env.image_size, tiny.env.episode_control_steps) == ("numpy", 32, 50)
    with pytest.raises(C.ConfigError, match="agent.softmax"):
        C.resolve(C.RunConfig(agent=C.AgentConfig(softmax="full")))
    with pytest.raises(C.ConfigError, match="agent.log_std_bound"):
        C.resolve(C.RunConfig(agent=C.AgentConfig(log_std_bound="soft")))
    # Relative points and the camera offset combine (the authors' defaults on cheetah/walker).
    both = C.AgentConfig(relative=True, camera_offset=True)
    assert C.resolve(C.RunConfig(agent=both, env=C.EnvConfig(task="cheetah_run"))).agent == both
    with pytest.raises(C.ConfigError, match="multiple of env.action_repeat"):
        C.resolve(C.RunConfig(env=C.EnvConfig(action_repeat=7)))


def test_save_load_round_trip(tmp_path):
    cfg = C.RunConfig(agent=C.AgentConfig(num_points=8, relative=False, lr_initial=3e-4,
                                          target_encoder=True, log_std_bound="tanh"),
                      env=C.EnvConfig(task="reacher_easy"), env_steps=1234, seed=7)
    path = tmp_path / "config.json"
    C.save_config(cfg, str(path))
    assert C.load_config(str(path)) == cfg
    assert C.from_dict(C.RunConfig, C.to_dict(cfg)) == cfg


def test_older_config_without_new_keys_takes_their_defaults(tmp_path):
    # A config.json written before target_encoder and log_std_bound existed.
    data = C.to_dict(C.RunConfig(agent=C.AgentConfig(num_points=8)))
    del data["agent"]["target_encoder"], data["agent"]["log_std_bound"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    agent = C.load_config(str(path)).agent
    assert (agent.num_points, agent.target_encoder, agent.log_std_bound) == (8, False, "clamp")


def test_load_rejects_corrupt_and_unknown(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(C.ConfigError, match="not valid JSON"):
        C.load_config(str(bad))
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"agent": {"num_pointz": 3}}))
    with pytest.raises(C.ConfigError, match="num_pointz"):
        C.load_config(str(unknown))
    with pytest.raises(C.ConfigError, match="no config file"):
        C.load_config(str(tmp_path / "missing.json"))


def test_every_field_documented_and_flag_names_unique():
    names = [f.name for f in dataclasses.fields(C.RunConfig) if f.name not in SECTIONS]
    for cls in [C.RunConfig, *SECTIONS.values()]:
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            if f.name in SECTIONS:
                continue
            assert docs.get(f.name), f"{cls.__name__}.{f.name} has no docstring"
            if cls is not C.RunConfig:
                names.append(f.name)
    assert len(names) == len(set(names))


def test_flags_build_config():
    parser = argparse.ArgumentParser()
    add_config_args(parser)
    args = parser.parse_args(["--task", "finger_spin", "--num-points", "8", "--no-velocity",
                              "--lr-initial", "0.0003", "--replay-ratio", "0.5", "--seed", "3"])
    cfg = config_from_args(args)
    assert cfg.env.task == "finger_spin" and cfg.agent.num_points == 8
    assert cfg.agent.velocity is False and cfg.agent.lr_initial == 3e-4
    assert cfg.replay.replay_ratio == 0.5 and cfg.seed == 3
    assert "--num-points" in parser.format_help() and "feature points" in parser.format_help()


def test_task_defaults_give_the_tiny_task_a_small_agent():
    tiny = C.with_task_defaults(C.RunConfig(env=C.EnvConfig(task="point_reach")))
    assert (tiny.agent.num_points, tiny.agent.hidden_dim, tiny.agent.batch_size) == (16, 256, 64)
    assert tiny.replay.initial_random_steps == 500 and tiny.agent.lr == 1e-3
    assert tiny.agent.relative is False  # the reward is one dot's absolute position
    assert (tiny.agent.hidden_layers, tiny.agent.mlp_init) == (2, "orthogonal")  # as measured
    static = C.RunConfig(env=C.EnvConfig(task="cartpole_swingup"))
    assert C.with_task_defaults(static) == static  # the dataclass defaults are the authors'


# Hand-written from the authors' train.py and Table I (not derived from TASK_DEFAULTS):
# (lr, lr_initial, lr_initial_env_steps, relative, camera_offset on dmc).
R, A, CAM = (3e-4, 1e-3, 200_000), (3e-4, None, 0), True
EXPECTED = {
    "cartpole_swingup": (*A, True, False), "reacher_easy": (*R, True, False),
    "cheetah_run": (*A, True, CAM), "finger_spin": (*A, True, False),
    "ball_in_cup_catch": (*A, False, False), "walker_walk": (*A, True, CAM),
    "hopper_hop": (*A, True, CAM), "hopper_stand": (*A, True, CAM),
    "pendulum_swingup": (*A, True, False), "reacher_hard": (*R, True, False),
    "walker_run": (*A, True, CAM), "walker_stand": (*A, True, CAM),
    "cartpole_balance": (*A, True, False), "cartpole_balance_sparse": (*A, True, False),
    "cartpole_swingup_sparse": (*A, True, False), "quadruped_walk": (*A, True, False),
    "quadruped_run": (*A, True, False), "point_reach": (1e-3, None, 0, False, False),
}


def cli_config(argv: list[str]) -> C.RunConfig:
    """What fpac-train / fpac-learner run for argv: task defaults under the flags, resolved."""
    parser = argparse.ArgumentParser()
    add_config_args(parser)
    return C.resolve(run_config(parser, parser.parse_args(argv), argv))


def agent_row(cfg: C.RunConfig) -> tuple:
    a = cfg.agent
    return a.lr, a.lr_initial, a.lr_initial_env_steps, a.relative, a.camera_offset


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_each_tasks_resolved_defaults(task):
    assert set(EXPECTED) == set(C.TASKS)
    cfg = cli_config(["--task", task])
    assert agent_row(cfg) == EXPECTED[task]
    assert (cfg.agent.target_encoder, cfg.agent.log_std_bound) == (False, "clamp")
    # the authors' 3 hidden layers everywhere but the tiny test task, which keeps its measured 2
    assert cfg.agent.hidden_layers == (2 if task == "point_reach" else 3)
    if C.TASKS[task].backend == "dmc":
        # envpool reports no camera motion: the camera-offset default stays off there.
        on_envpool = cli_config(["--task", task, "--backend", "envpool"])
        assert agent_row(on_envpool) == EXPECTED[task][:4] + (False,)


def test_flags_override_task_defaults():
    cfg = cli_config(["--task", "walker_walk", "--no-camera-offset", "--no-relative",
                      "--lr", "1e-4", "--target-encoder", "--log-std-bound", "tanh"])
    assert (cfg.agent.camera_offset, cfg.agent.relative, cfg.agent.lr) == (False, False, 1e-4)
    assert (cfg.agent.target_encoder, cfg.agent.log_std_bound) == (True, "tanh")
    cfg = cli_config(["--task", "reacher_hard", "--lr-initial-env-steps", "0"])
    assert cfg.agent.lr_initial_env_steps == 0 and C.lr_at(cfg.agent, 0) == 3e-4
    cfg = cli_config(["--task", "reacher_easy"])
    assert [C.lr_at(cfg.agent, s) for s in (0, 199_999, 200_000)] == [1e-3, 1e-3, 3e-4]
    cfg = cli_config(["--task", "cartpole_swingup", "--camera-offset"])  # zeros: harmless
    assert cfg.agent.camera_offset is True


def test_camera_offset_on_envpool_is_refused():
    with pytest.raises(C.ConfigError, match="camera_offset.*envpool reports zero offsets"):
        cli_config(["--task", "cheetah_run", "--backend", "envpool", "--camera-offset"])
    with pytest.raises(C.ConfigError, match="camera_offset"):
        C.resolve(C.RunConfig(agent=C.AgentConfig(camera_offset=True),
                              env=C.EnvConfig(task="walker_walk", backend="envpool")))
    assert C.resolve(C.RunConfig(env=C.EnvConfig(task="cheetah_run", backend="envpool")))


def test_camera_offset_on_quadruped_is_refused() -> None:
    """Quadruped's tracking camera moves, but its motion is not measured (zeros would be sent)."""
    cfg = C.RunConfig(agent=C.AgentConfig(camera_offset=True),
                      env=C.EnvConfig(task="quadruped_walk"))
    with pytest.raises(C.ConfigError, match="quadruped"):
        C.resolve(cfg)
    quadruped = C.with_task_defaults(C.RunConfig(env=C.EnvConfig(task="quadruped_walk")))
    assert C.resolve(quadruped).agent.camera_offset is False  # its default is off
