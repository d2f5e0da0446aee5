"""`--print-config` on fpac-train and fpac-learner: the resolved config (task defaults under the
flags) as JSON, and nothing started or written."""
from __future__ import annotations

import json
import os

from deploy import train_cli
from fpac_async.config import RunConfig, from_dict, to_dict
from learner import cli as learner_cli


def test_learner_prints_the_resolved_config_with_task_defaults_under_flags(tmp_path, capsys):
    run_dir = str(tmp_path / "never")
    argv = ["--task", "reacher_easy", "--gpus", "0", "--run-dir", run_dir, "--lr", "5e-4",
            "--print-config"]
    assert learner_cli.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    cfg = from_dict(RunConfig, printed)
    assert cfg.agent.lr == 5e-4  # the flag
    # The reacher schedule of the task defaults (Table I / the authors' code), by value:
    assert (cfg.agent.lr_initial, cfg.agent.lr_initial_env_steps) == (1e-3, 200_000)
    assert cfg.env.action_repeat == 4 and cfg.env.image_size == 84  # resolved from the preset
    assert not os.path.exists(run_dir)  # nothing written, no log file


def test_train_prints_exactly_what_the_run_would_save(tmp_path, capsys):
    argv = ["--task", "point_reach", "--run-dir", str(tmp_path / "r"), "--actors", "1",
            "--print-config"]
    assert train_cli.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    parser = train_cli.build_parser()
    cfg = train_cli.make_config(parser.parse_args(argv), argv, parser)
    printed["learner"]["bind"] = cfg.learner.bind  # a free port is picked per call
    assert printed == to_dict(cfg)
    assert not os.path.exists(str(tmp_path / "r"))


def test_print_config_refuses_a_bad_flag(capsys):
    assert learner_cli.main(["--task", "no_such_task", "--print-config"]) == 2
    assert "unknown task" in capsys.readouterr().err
