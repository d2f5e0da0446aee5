"""deploy/cluster_task.py: what a cluster task turns the engine's environment into (actor ids from
the task rank, the learner's node, --resume after a requeue). The real runs: tests/test_slurm.py."""
from __future__ import annotations

import os

import pytest

from actors.cli import build_parser as actors_parser
import subprocess

from deploy.cluster_task import (ClusterTaskError, actors_argv, first_host, learner_argv,
                                 main, node_address)

BASE = ["--task", "point_reach"]


def ids(argv: list[str]) -> range:
    args = actors_parser().parse_args(argv)
    return range(args.actor_id_offset, args.actor_id_offset + args.n)


@pytest.mark.parametrize("rank_var", ["SLURM_PROCID", "JOB_COMPLETION_INDEX"])
def test_task_ranks_give_disjoint_consecutive_actor_ids(rank_var):
    env = {"SLURM_JOB_NODELIST": "n1"}
    run = fake_scontrol({})
    all_ids = []
    for rank in range(4):
        argv = actors_argv(BASE, 3, {**env, rank_var: str(rank)}, id_base=100, run=run)
        all_ids += ids(argv)
    assert all_ids == list(range(100, 112))


def test_slurm_rank_wins_and_a_missing_or_bad_rank_is_an_error():
    argv = actors_argv(BASE, 2, {"SLURM_PROCID": "1", "JOB_COMPLETION_INDEX": "5",
                                 "SLURM_JOB_NODELIST": "n1"})
    assert list(ids(argv)) == [2, 3]
    with pytest.raises(ClusterTaskError, match="no task rank"):
        actors_argv(BASE, 2, {"SLURM_JOB_NODELIST": "n1"})
    with pytest.raises(ClusterTaskError, match="not a rank"):
        actors_argv(BASE, 2, {"SLURM_PROCID": "x", "SLURM_JOB_NODELIST": "n1"})
    with pytest.raises(ClusterTaskError, match="set from the task's rank"):
        actors_argv([*BASE, "--actor-id-offset", "7"], 2, {"SLURM_PROCID": "0"})
    with pytest.raises(ClusterTaskError, match="per-task"):
        actors_argv(BASE, 0, {"SLURM_PROCID": "0"})


def fake_scontrol(addresses: dict[str, str]):
    """A stand-in for subprocess.run(['scontrol', 'show', 'node', NAME, '-o'])."""
    def run(argv, **_):
        node = argv[3]
        out = f"NodeName={node} Arch=x86_64 NodeAddr={addresses[node]} NodeHostName={node}" \
            if node in addresses else ""
        return subprocess.CompletedProcess(argv, 0 if out else 1, stdout=out, stderr="")
    return run


def test_the_learner_is_the_first_node_of_het_group_0_else_of_the_job_at_its_node_addr():
    run = fake_scontrol({"gpu03": "10.1.0.3", "cpu1": "10.2.0.1"})
    env = {"SLURM_PROCID": "0", "SLURM_JOB_NODELIST": "cpu[1-9]",
           "SLURM_JOB_NODELIST_HET_GROUP_0": "gpu[03-05,07],cpu1"}
    args = actors_parser().parse_args(actors_argv(BASE, 1, env, learner_port=6000, run=run))
    assert args.learner == "10.1.0.3:6000"
    del env["SLURM_JOB_NODELIST_HET_GROUP_0"]
    assert actors_parser().parse_args(actors_argv(BASE, 1, env, run=run)).learner == "10.2.0.1:5555"
    given = actors_argv([*BASE, "--learner", "10.0.0.5:7000"], 1, env, run=run)
    assert actors_parser().parse_args(given).learner == "10.0.0.5:7000"
    assert node_address("unknown", run) == "unknown"  # scontrol cannot say: the name itself
    assert first_host("a,b") == "a" and first_host("node7") == "node7"
    with pytest.raises(ClusterTaskError, match="give --learner"):
        actors_argv(BASE, 1, {"SLURM_PROCID": "0"}, run=run)


def test_only_rank_0_runs_the_evaluator():
    env = {"SLURM_JOB_NODELIST": "n1"}
    flags = [actors_parser().parse_args(
        actors_argv(BASE, 1, {**env, "SLURM_PROCID": str(r)}, evaluator=True)).evaluator
        for r in range(3)]
    assert flags == [True, False, False]


def test_learner_resumes_only_when_the_run_has_a_checkpoint(tmp_path):
    argv = [*BASE, "--run-dir", str(tmp_path)]
    assert "--resume" not in learner_argv(argv)
    (tmp_path / "config.json").write_text("{}")  # a config but no checkpoint: start fresh
    assert "--resume" not in learner_argv(argv)
    os.makedirs(tmp_path / "checkpoints")
    (tmp_path / "checkpoints" / "ckpt-120.pt").write_bytes(b"")
    assert learner_argv(argv).count("--resume") == 1
    assert learner_argv([*argv, "--resume"]).count("--resume") == 1
    with pytest.raises(ClusterTaskError, match="--run-dir"):
        learner_argv(BASE)


def test_main_reports_a_missing_rank_with_exit_2(capsys, monkeypatch):
    for var in ("SLURM_PROCID", "JOB_COMPLETION_INDEX"):
        monkeypatch.delenv(var, raising=False)
    assert main(["actors", "--per-task", "1", "--learner", "h:5555", *BASE]) == 2
    assert "no task rank" in capsys.readouterr().err
