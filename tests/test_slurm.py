"""deploy/slurm/ under a real Slurm: a two-node cluster on this machine (slurmctld, munged and one
slurmd per node from Debian's slurm-wlm; node 2's slurmd in a network namespace joined by a veth
pair: deploy/slurm/local_cluster.sh), the job scripts submitted with sbatch on the tiny task
(point_reach, state encoder, CPU learner).

- fpac-hetjob.sbatch RUNS as a heterogeneous job: the learner component and the actor component
  (2 tasks) on different nodes, the actors reaching the learner at its node's address over the
  veth; it completes with steps from every actor task under its own id.
- fpac-single.sbatch (for clusters without heterogeneous jobs) runs 1 learner + 2 actor tasks to
  completion, and a second submission on the same run dir resumes the run from its checkpoint
  (what a requeue does: same job id, same run dir).

On a one-node cluster (no network namespaces) heterogeneous jobs never start: the backfill
scheduler, which alone starts them, plans component 0 on the whole node and so component 1 after
it; that test then skips with this reason. Skips (with the reason) where it cannot run: not root,
no apt-get / packages not installable. The GPU request lines (`--gres=gpu:1`, `--gpus=1`) are
removed from the submitted copies: this cluster has no GPUs and the learner runs with --gpus 0.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLURM = os.path.join(REPO, "deploy", "slurm")
RUN_ARGS = "--task point_reach --seed 0 --encoder state"
LEARNER_ARGS = ("--gpus 0 --hidden-dim 32 --batch-size 16 --initial-random-steps 100 "
                "--eval-every-env-steps 0 --replay-ratio 0.25 --log-every-s 2")
ACTOR_TASKS = 2
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("needs root: installs slurm-wlm/munge and runs slurmctld/slurmd")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("no Slurm installed and no apt-get to install Debian's slurm-wlm")
    workdir = tempfile.mkdtemp(prefix="fpac-slurm-")
    script = os.path.join(SLURM, "local_cluster.sh")
    proc = subprocess.run(["bash", script, "start", os.path.join(workdir, "cluster")],
                          capture_output=True, text=True, timeout=420, check=False)
    if proc.returncode == 2:
        pytest.skip(f"cannot run a local Slurm here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    env = dict(os.environ, SLURM_CONF=os.path.join(workdir, "cluster", "slurm.conf"))
    nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], env=env, capture_output=True,
                           text=True, timeout=60, check=False).stdout.split()
    try:
        yield workdir, env, nodes
    finally:
        subprocess.run(["bash", script, "stop", os.path.join(workdir, "cluster")],
                       capture_output=True, timeout=60, check=False)
        shutil.rmtree(workdir, ignore_errors=True)


def job_copy(name: str, dest_dir: str) -> str:
    """deploy/slurm/NAME without its GPU request lines (this cluster has no GPUs)."""
    with open(os.path.join(SLURM, name)) as f:
        lines = [ln for ln in f if not re.match(r"#SBATCH --(gres=gpu|gpus)", ln)]
    path = os.path.join(dest_dir, name)
    with open(path, "w") as f:
        f.writelines(lines)
    return path


def submit(script: str, env: dict, run_dir: str, env_steps: int,
           sbatch_opts: tuple[str, ...] = (f"--ntasks={1 + ACTOR_TASKS}", "--cpus-per-task=1",
                                            "--mem-per-cpu=200M", "--time=8"),
           ) -> subprocess.CompletedProcess:
    job_env = dict(env, FPAC_REPO=REPO, FPAC_PYTHON=sys.executable, FPAC_RUN_DIR=run_dir,
                   FPAC_PORT="47431", FPAC_ACTORS_PER_TASK="1", FPAC_EVALUATOR="0",
                   FPAC_RUN_ARGS=RUN_ARGS,
                   FPAC_LEARNER_ARGS=f"{LEARNER_ARGS} --env-steps {env_steps}",
                   PYTHONPATH=REPO, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    return subprocess.run(
        ["sbatch", "--wait", *sbatch_opts, "-o", os.path.join(run_dir, "batch-%j.out"), script],
        env=job_env, cwd=REPO, capture_output=True, text=True, timeout=540, check=False)


def read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def final_steps(log: str) -> dict[int, int]:
    """{actor id: steps} from the last 'final per-actor stats' table of an fpac-actors log."""
    tables = log.split("final per-actor stats:")
    assert len(tables) > 1, log[-2000:]
    rows = re.findall(r"^\s*actor\s+(\d+)\s+\w+\s+\d+\s+(\d+)", tables[-1], re.M)
    return {int(a): int(s) for a, s in rows}


def log_named(logs: str, pattern: str) -> str:
    """The one log file in `logs` matching the glob `pattern` (component job ids differ)."""
    (path,) = glob.glob(os.path.join(logs, pattern))
    return read(path)


def check_actor_tasks(logs: str) -> list[str]:
    """Every actor task's log shows steps under its own id (rank r -> actor id r); returns the
    --learner address each task used."""
    addresses = []
    for rank in range(ACTOR_TASKS):
        log = log_named(logs, f"actors-*-{rank}.out")
        steps = final_steps(log)
        assert list(steps) == [rank], steps
        assert steps[rank] > 0, steps
        addresses += re.findall(r"cluster_task: fpac-actors .*--learner (\S+)", log)
    return addresses


def test_hetjob_runs_learner_and_actors_on_two_nodes(cluster):
    workdir, env, nodes = cluster
    if len(nodes) < 2:
        pytest.skip("one-node cluster (no network namespaces here): Slurm's backfill scheduler "
                    "never starts a heterogeneous job's components together on one node")
    run_dir = os.path.join(workdir, "hetrun")
    os.makedirs(run_dir)
    script = job_copy("fpac-hetjob.sbatch", workdir)
    # Shrink the per-component requests to this cluster (8 cpus, 8000 MB per node).
    text = read(script)
    text = re.sub(r"--cpus-per-task=\d+", "--cpus-per-task=1", text)
    text = re.sub(r"--mem-per-cpu=\w+", "--mem-per-cpu=200M", text)
    text = re.sub(r"(#SBATCH hetjob\n#SBATCH --ntasks=)\d+", rf"\g<1>{ACTOR_TASKS}", text)
    text = re.sub(r"--time=[\d:]+", "--time=8", text)
    with open(script, "w") as f:
        f.write(text)
    proc = submit(script, env, run_dir, env_steps=600, sbatch_opts=())
    logs = os.path.join(run_dir, "logs")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    batch = log_named(run_dir, "batch-*.out")
    placed = re.search(r"learner on (\S+), actors on (\S+)", batch)
    assert placed and placed[1] != placed[2], batch  # two nodes: two hosts
    learner_log = log_named(logs, "learner-*.out")
    assert "run finished" in learner_log
    # run_job.sh's --wait-for-actors: no actor task steps before the other's hello.
    assert f"{ACTOR_TASKS} actors said hello" in learner_log, learner_log[-3000:]
    addresses = check_actor_tasks(logs)
    # The actors reached the learner at its node's NodeAddr (10.214.0.x), not by a local name.
    assert len(addresses) == ACTOR_TASKS and all(a.startswith("10.214.0.") for a in addresses), \
        addresses


def test_single_variant_runs_every_actor_task_and_resumes(cluster):
    workdir, env, _ = cluster
    run_dir = os.path.join(workdir, "run")
    os.makedirs(run_dir)
    script = job_copy("fpac-single.sbatch", workdir)
    # run_job.sh passes --wait-for-actors: without it the first actor task could spend the
    # whole budget before the second sent anything (seen: {0: 0} steps).
    proc = submit(script, env, run_dir, env_steps=600)
    job = re.search(r"Submitted batch job (\d+)", proc.stdout)
    logs = os.path.join(run_dir, "logs")
    detail = proc.stdout + proc.stderr + "".join(
        read(os.path.join(logs, f))[-1500:] for f in sorted(os.listdir(logs))) \
        if os.path.isdir(logs) else proc.stdout + proc.stderr
    assert proc.returncode == 0 and job, detail
    jid = job[1]
    first_log = read(os.path.join(logs, f"learner-{jid}.out"))
    assert "run finished" in first_log and f"{ACTOR_TASKS} actors said hello" in first_log, detail
    check_actor_tasks(logs)

    # A requeue reruns the job on the same run dir: the learner resumes from the checkpoint.
    proc = submit(script, env, run_dir, env_steps=1200)
    job = re.search(r"Submitted batch job (\d+)", proc.stdout)
    assert proc.returncode == 0 and job, proc.stdout + proc.stderr
    learner_log = read(os.path.join(logs, f"learner-{job[1]}.out"))
    assert "--resume" in learner_log and "resumed from" in learner_log, learner_log[-3000:]
    finished = re.findall(r"run finished: (\d+) env steps", learner_log)
    assert finished and int(finished[-1]) >= 1200, learner_log[-3000:]
    assert "not waiting, the run is resumed" in learner_log, learner_log[-3000:]
