"""Issue 20: clear exits and honest flags on the real CLIs.

- A busy port: fpac-learner and fpac-train exit 2 within seconds, with no traceback, no process
  left and no run directory (before: ctx.term() hung on the socket whose bind failed).
- Flags: an abbreviation is refused, a typo gets a short error with the suggestion, each default
  shows once in --help, --task lists the tasks, fpac-actors --help has no empty groups,
  fpac-pretrain names itself.
- Resume: --resume of a finished run writes nothing and exits 0; after a corrupt checkpoint no
  `--resume` is advised.
The busy-port and resume checks run the CLIs as subprocesses (`python -m ...`).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from fpac_async.config import RunConfig, EnvConfig, resolve, save_config
from fpac_async.wire.transport import free_port_pair

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--task", "point_reach", "--gpus", "0"]


def cli(module: str, args: list[str], timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout_s, check=False, env=env,
                          start_new_session=True)


def session_members(sid: int) -> list[int]:
    """Processes still in session `sid` (the CLI's children would be)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                out.append(int(entry))
    return out


@pytest.fixture
def busy_port():
    """A port whose data address is taken on every interface (the next two are free)."""
    port = free_port_pair()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen()
        yield port


@pytest.mark.parametrize("module", ["learner.cli", "deploy.train_cli"])
def test_a_busy_port_exits_2_quickly_and_leaves_nothing(tmp_path, busy_port, module):
    run_dir = str(tmp_path / "run")
    extra = ["--actors", "1", "--no-gif"] if module == "deploy.train_cli" else []
    env = {**os.environ, "MUJOCO_GL": "egl"}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", module, *TINY, *extra, "--bind",
                             f"tcp://*:{busy_port}", "--run-dir", run_dir], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    assert proc.returncode == 2, err
    assert time.monotonic() - started < 15
    assert "Traceback" not in out + err
    assert "Address already in use" in err
    # A non-loopback bind without --auth: one warning line that says what it exposes.
    assert err.count("without --auth") == 1 and "every interface" in err
    assert not os.path.exists(run_dir)
    deadline = time.monotonic() + 5
    while session_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert session_members(proc.pid) == []  # no actor outlived fpac-train


def test_an_abbreviated_flag_is_refused_with_a_short_error(capsys):
    from deploy.train_cli import main

    with pytest.raises(SystemExit) as e:
        main(["--env-step", "100", "--print-config"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --env-step" in err
    assert "did you mean --env-steps" in err
    assert len(err.strip().splitlines()) <= 4  # not the ~40-line usage block


@pytest.mark.parametrize("module", ["deploy.train_cli", "learner.cli", "actors.cli"])
def test_help_shows_each_default_once_and_lists_the_tasks(capsys, module):
    import importlib

    parser = importlib.import_module(module).build_parser()
    text = " ".join(parser.format_help().split())  # unwrapped
    assert "(default: 500000) (default: 500000)" not in text
    assert text.count("(default: 500000)") <= 1
    for a in parser._actions:  # noqa: SLF001
        if a.help:
            assert a.help.count("(default:") <= 1, a.option_strings
    task_help = next(a.help for a in parser._actions if "--task" in a.option_strings)  # noqa: SLF001
    assert "cartpole_swingup" in task_help and "point_reach" in task_help
    if module == "actors.cli":  # only some config flags: no empty group headings
        assert "\nreplay:" not in parser.format_help()


def test_pretrain_names_itself(capsys):
    from deploy.pretrain_points import build_parser

    text = build_parser().format_help()
    assert text.startswith("usage: fpac-pretrain") and "python -m deploy" not in text


def test_default_bind_is_loopback():
    from learner.exposure import exposure_warning

    assert RunConfig().learner.bind.startswith("tcp://127.0.0.1:")
    assert exposure_warning(RunConfig().learner.bind, None) is None
    assert exposure_warning("tcp://[::1]:5555", None) is None
    assert exposure_warning("tcp://10.0.0.1:5555", "keys") is None
    assert "10.0.0.1" in exposure_warning("tcp://10.0.0.1:5555", None)


def finished_run(run_dir: str, budget: int) -> str:
    cfg = resolve(RunConfig(run_dir=run_dir, env_steps=budget, env=EnvConfig(task="point_reach")))
    os.makedirs(run_dir)
    save_config(cfg, os.path.join(run_dir, "config.json"))
    with open(os.path.join(run_dir, "evals.jsonl"), "w") as f:
        f.write(json.dumps({"env_steps": budget, "mean_return": -4.5, "final": True,
                            "learner_env_steps": budget}) + "\n")
    return run_dir


@pytest.mark.parametrize("module", ["deploy.train_cli", "learner.cli"])
def test_resume_of_a_finished_run_says_so_and_writes_no_row(tmp_path, module):
    run_dir = finished_run(str(tmp_path / "run"), 2000)
    before = sorted(os.listdir(run_dir)), open(os.path.join(run_dir, "evals.jsonl")).read()
    args = ["--resume", run_dir] if module == "deploy.train_cli" else [
        "--resume", "--run-dir", run_dir, "--gpus", "0"]
    r = cli(module, args)
    assert r.returncode == 0, r.stderr
    assert "is finished" in r.stdout
    assert (sorted(os.listdir(run_dir)), open(os.path.join(run_dir, "evals.jsonl")).read()) \
        == before
    # A larger budget is not finished: it would train on (not run here).
    from learner.run_dir import finished

    assert finished(run_dir, 2000) and not finished(run_dir, 4000)


def test_a_corrupt_checkpoint_does_not_advise_resuming_it(tmp_path):
    run_dir = finished_run(str(tmp_path / "run"), 2000)
    os.remove(os.path.join(run_dir, "evals.jsonl"))
    os.makedirs(os.path.join(run_dir, "checkpoints"))
    with open(os.path.join(run_dir, "checkpoints", "ckpt-100.pt"), "wb") as f:
        f.write(b"not a checkpoint")
    with open(os.path.join(run_dir, "checkpoints", "latest"), "w") as f:
        f.write("ckpt-100.pt\n")
    r = cli("deploy.train_cli", ["--resume", run_dir, "--actors", "1"])
    assert r.returncode == 2
    assert "not an FPAC checkpoint" in r.stderr
    assert "--resume" not in r.stdout + r.stderr.split("fpac-train: exit code 2")[-1]
    assert "continue with" not in r.stdout
    assert os.path.exists(run_dir)  # not ours to remove
