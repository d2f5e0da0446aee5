"""deploy/slurm/ under a real Slurm: a one-node cluster on this machine (slurmctld + slurmd +
munged from Debian's slurm-wlm, deploy/slurm/local_cluster.sh), the job script submitted with
sbatch on the tiny task (point_reach, state encoder, CPU learner).

- fpac-single.sbatch (the variant for clusters without heterogeneous jobs) RUNS: 1 learner task +
  2 actor tasks; it completes, every actor task's log shows steps under its own actor id (ids
  0 and 1, from the task ranks), and a second submission on the same run dir resumes the run from
  its checkpoint (what a requeue does: same job id, same run dir).
- fpac-hetjob.sbatch is checked by slurmctld (sbatch --test-only: both components accepted) but
  not run: on a ONE-node cluster the two components never start (Reason=Resources, cpus free).
  Heterogeneous jobs are started only by the backfill scheduler, and its plan (DebugFlags=Backfill)
  takes the whole node out for component 0's planned time, so component 1 is planned after
  component 0 ends and the pair never starts together; a real heterogeneous run needs two nodes.

Skips (with the reason) where it cannot run: not root, no apt-get / packages not installable.
The GPU request lines (`--gres=gpu:1`, `--gpus=1`) are removed from the submitted copies: this
cluster has no GPUs and the learner runs with --gpus 0.
"""
from __future__ import annotations

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
    try:
        yield workdir, env
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


def submit(script: str, env: dict, run_dir: str, env_steps: int) -> subprocess.CompletedProcess:
    job_env = dict(env, FPAC_REPO=REPO, FPAC_PYTHON=sys.executable, FPAC_RUN_DIR=run_dir,
                   FPAC_PORT="47431", FPAC_ACTORS_PER_TASK="1", FPAC_EVALUATOR="0",
                   FPAC_RUN_ARGS=RUN_ARGS,
                   FPAC_LEARNER_ARGS=f"{LEARNER_ARGS} --env-steps {env_steps}",
                   PYTHONPATH=REPO, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    return subprocess.run(
        ["sbatch", "--wait", f"--ntasks={1 + ACTOR_TASKS}", "--cpus-per-task=1",
         "--mem-per-cpu=200M", "--time=8", "-o", os.path.join(run_dir, "batch-%j.out"), script],
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


def test_single_variant_runs_every_actor_task_and_resumes(cluster):
    workdir, env = cluster
    run_dir = os.path.join(workdir, "run")
    os.makedirs(run_dir)
    script = job_copy("fpac-single.sbatch", workdir)
    proc = submit(script, env, run_dir, env_steps=600)
    job = re.search(r"Submitted batch job (\d+)", proc.stdout)
    logs = os.path.join(run_dir, "logs")
    detail = proc.stdout + proc.stderr + "".join(
        read(os.path.join(logs, f))[-1500:] for f in sorted(os.listdir(logs))) \
        if os.path.isdir(logs) else proc.stdout + proc.stderr
    assert proc.returncode == 0 and job, detail
    jid = job[1]
    assert "run finished" in read(os.path.join(logs, f"learner-{jid}.out")), detail
    ids = {}
    for rank in range(ACTOR_TASKS):  # one log per actor task; ids from the rank, steps from each
        steps = final_steps(read(os.path.join(logs, f"actors-{jid}-{rank}.out")))
        assert list(steps) == [rank], steps
        assert steps[rank] > 0, steps
        ids.update(steps)
    assert sorted(ids) == list(range(ACTOR_TASKS))

    # A requeue reruns the job on the same run dir: the learner resumes from the checkpoint.
    proc = submit(script, env, run_dir, env_steps=1200)
    job = re.search(r"Submitted batch job (\d+)", proc.stdout)
    assert proc.returncode == 0 and job, proc.stdout + proc.stderr
    learner_log = read(os.path.join(logs, f"learner-{job[1]}.out"))
    assert "--resume" in learner_log and "resumed from" in learner_log, learner_log[-3000:]
    finished = re.findall(r"run finished: (\d+) env steps", learner_log)
    assert finished and int(finished[-1]) >= 1200, learner_log[-3000:]


def test_hetjob_is_accepted_by_slurmctld(cluster):
    workdir, env = cluster
    script = job_copy("fpac-hetjob.sbatch", workdir)
    # Shrink the per-component requests to this 8-cpu, 8000 MB node (the options are per component).
    text = read(script)
    text = re.sub(r"--cpus-per-task=\d+", "--cpus-per-task=1", text)
    text = re.sub(r"--mem-per-cpu=\w+", "--mem-per-cpu=100M", text)
    with open(script, "w") as f:
        f.write(text)
    proc = subprocess.run(["sbatch", "--test-only", script], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "to start at" in proc.stderr, proc.stderr
    # Two components: the learner (1 task) and the actor tasks, as the script's hetjob lines say.
    assert text.count("#SBATCH hetjob") == 1 and "run_job.sh\" het" in text
