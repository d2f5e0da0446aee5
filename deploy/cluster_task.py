"""One task of a cluster job: the learner, or this task's share of the actors (Slurm, Kubernetes).

    python -m deploy.cluster_task learner [fpac-learner flags]
    python -m deploy.cluster_task actors --per-task N [fpac-actors flags]

The cluster engine places and restarts the tasks; this only turns what the engine tells a task
(its rank, the learner's node, whether the run already has a checkpoint) into the CLIs' flags:

- learner: adds --resume when --run-dir already holds a checkpoint, so a requeued Slurm job or a
  restarted Kubernetes pod continues the run instead of refusing to overwrite it (fpac-learner
  --resume; without a checkpoint the run starts fresh), and `--bind tcp://*:5555` unless a
  --bind is given: fpac-learner's own default is loopback only (issue 20), which actors on other
  nodes cannot reach.
- actors: --n N and --actor-id-offset = (--id-base) + rank * N, with the rank from SLURM_PROCID
  (the task's rank within its job step) or JOB_COMPLETION_INDEX (a Kubernetes Indexed Job's pod
  index), so actor ids never overlap between tasks. The actors' env seeds follow from their ids
  (seed + 1000 * actor id, actors/supervisor.py), so distinct ids are distinct seeds. Without
  --learner, the learner's host is the first node of the job's first heterogeneous component
  (SLURM_JOB_NODELIST_HET_GROUP_0), or of the job (SLURM_JOB_NODELIST) without components, at
  the address Slurm itself uses for that node (NodeAddr), with port --learner-port. With
  --evaluator, rank 0 also runs the run's evaluator (fpac-actors --evaluator): evaluations need
  one evaluator process somewhere, and only one.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
from typing import Any, Callable, Mapping, Sequence

RANK_VARS = ("SLURM_PROCID", "JOB_COMPLETION_INDEX")


class ClusterTaskError(ValueError):
    """The engine's environment does not say what this task needs (named in the message)."""


def has_checkpoint(run_dir: str) -> bool:
    """True when run_dir holds a checkpoint fpac-learner --resume can continue from."""
    return bool(glob.glob(os.path.join(run_dir, "checkpoints", "ckpt-*.pt")))


def _flag_value(argv: Sequence[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


CLUSTER_BIND = "tcp://*:5555"  # every interface: the actors run on other nodes


def learner_argv(argv: Sequence[str]) -> list[str]:
    """fpac-learner's argv: `argv`, plus --resume when its --run-dir has a checkpoint and
    --bind CLUSTER_BIND when it names no --bind."""
    if _flag_value(argv, "--bind") is None:
        argv = [*argv, "--bind", CLUSTER_BIND]
    run_dir = _flag_value(argv, "--run-dir")
    if run_dir is None:
        raise ClusterTaskError("learner: give --run-dir (on storage that survives a requeue or "
                               "pod restart, so that the run can resume)")
    if "--resume" not in argv and has_checkpoint(run_dir):
        return [*argv, "--resume"]
    return list(argv)


def task_rank(env: Mapping[str, str]) -> int:
    """This task's rank: SLURM_PROCID, else JOB_COMPLETION_INDEX (Kubernetes Indexed Job)."""
    for name in RANK_VARS:
        value = env.get(name)
        if value is not None:
            if not value.isdigit():
                raise ClusterTaskError(f"{name}={value!r} is not a rank (a number >= 0)")
            return int(value)
    raise ClusterTaskError(f"no task rank: none of {', '.join(RANK_VARS)} is set (run this as a "
                           "Slurm task or in a Kubernetes Indexed Job, or give --rank)")


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list ('gpu[03-05,07],cpu1' -> 'gpu03'), without scontrol."""
    match = re.match(r"^([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match or not match[1]:
        raise ClusterTaskError(f"cannot read a host from the node list {nodelist!r}")
    if match[2] is None:
        return match[1]
    return match[1] + re.split(r"[-,]", match[2])[0]


def node_address(node: str, run: Callable[..., Any] = subprocess.run) -> str:
    """The address Slurm reaches `node` at (its NodeAddr, from `scontrol show node`), which is
    what other nodes can reach too; the name itself when scontrol cannot say."""
    try:
        out = run(["scontrol", "show", "node", node, "-o"], capture_output=True, text=True,
                  timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return node
    match = re.search(r"\bNodeAddr=(\S+)", out or "")
    return match[1] if match and match[1] != "(null)" else node


def learner_host(env: Mapping[str, str], run: Callable[..., Any] = subprocess.run) -> str:
    """The learner's host: the first node of het group 0, else of the whole job (its NodeAddr)."""
    for name in ("SLURM_JOB_NODELIST_HET_GROUP_0", "SLURM_JOB_NODELIST"):
        if env.get(name):
            return node_address(first_host(env[name]), run)
    raise ClusterTaskError("no --learner and no SLURM_JOB_NODELIST to find the learner's node "
                           "in: give --learner HOST:PORT")


def actors_argv(argv: Sequence[str], per_task: int, env: Mapping[str, str],
                id_base: int = 0, rank: int | None = None, learner_port: int = 5555,
                evaluator: bool = False, run: Callable[..., Any] = subprocess.run) -> list[str]:
    """fpac-actors' argv for this task: `argv` plus --n, --actor-id-offset and --learner (and
    --evaluator on rank 0 when `evaluator`: a run needs exactly one evaluator somewhere)."""
    if per_task < 1:
        raise ClusterTaskError(f"--per-task must be >= 1; got {per_task}")
    for flag in ("--n", "--actor-id-offset"):
        if _flag_value(argv, flag) is not None:
            raise ClusterTaskError(f"{flag} is set from the task's rank; give --per-task and "
                                   "--id-base instead")
    rank = task_rank(env) if rank is None else rank
    out = [*argv, "--n", str(per_task), "--actor-id-offset", str(id_base + rank * per_task)]
    if evaluator and rank == 0:
        out.append("--evaluator")
    if _flag_value(argv, "--learner") is None:
        out += ["--learner", f"{learner_host(env, run)}:{learner_port}"]
    return out


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: the CLIs' own flags pass through (`--learner` is not `--learner-port`).
    parser = argparse.ArgumentParser(prog="python -m deploy.cluster_task", allow_abbrev=False,
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role", required=True)
    sub.add_parser("learner", allow_abbrev=False,
                   help="fpac-learner (+ --resume when the run has a checkpoint)")
    actors = sub.add_parser("actors", allow_abbrev=False,
                            help="fpac-actors with ids from the task's rank")
    actors.add_argument("--per-task", type=int, required=True, help="actor processes per task")
    actors.add_argument("--id-base", type=int, default=0, help="first actor id of rank 0")
    actors.add_argument("--rank", type=int, default=None,
                        help="this task's rank (default: SLURM_PROCID / JOB_COMPLETION_INDEX)")
    actors.add_argument("--learner-port", type=int, default=5555,
                        help="the learner's port when --learner is not given")
    actors.add_argument("--evaluator", action="store_true",
                        help="rank 0 also runs the run's one evaluator process")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.role == "learner":
            from learner.cli import main as learner_main  # noqa: PLC0415 - torch: only here
            final = learner_argv(rest)
            print(f"cluster_task: fpac-learner {subprocess.list2cmdline(final)}", flush=True)
            return learner_main(final)
        final = actors_argv(rest, args.per_task, os.environ, args.id_base, args.rank,
                            args.learner_port, args.evaluator)
    except ClusterTaskError as e:
        print(f"cluster_task: {e}", file=sys.stderr)
        return 2
    from actors.cli import main as actors_main  # noqa: PLC0415
    print(f"cluster_task: fpac-actors {subprocess.list2cmdline(final)}", flush=True)
    return actors_main(final)


if __name__ == "__main__":
    sys.exit(main())
