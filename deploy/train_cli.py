"""`fpac-train`: one command that trains FPAC on this machine (a learner and N actors).

    fpac-train --task cartpole_swingup [--env-steps 500000] [--actors N] [--run-dir DIR]
    fpac-train --resume RUN_DIR [--env-steps MORE]

Every config field is a flag (fpac_async.cli_args). Defaults picked here: the GPU when
torch.cuda.is_available() (else --gpus 0), a free loopback port for the learner, N actors from the
core count (deploy.local_run.default_actor_count) and run dir runs/<task>-<UTC time>. With --resume
the config is RUN_DIR/config.json (flags given on the command line override it, e.g. a larger
--env-steps; the learner refuses changes that do not fit the checkpoint) and the counters come from
the latest checkpoint. At the end: a learning-curve plot, a GIF of an evaluation episode with the
feature points drawn (fpac encoder), and where everything is. Exit code: the learner's (0 done,
2 could not start, 128 + signal after Ctrl-C / SIGTERM with a checkpoint written, 1 failure).

Issue 20: a run that cannot start (exit 2, e.g. --bind on a port in use) stops its actors and
leaves no run directory it created (learner.run_dir); --resume of a finished run says so and
exits 0 without starting anything; after exit 2 (a corrupt checkpoint, a busy port) no
`--resume` is advised; a --bind beyond loopback without --auth logs one warning
(learner.exposure).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import os
import signal
import sys
from typing import Sequence

import torch

from fpac_async.cli_args import add_config_args, explicit_dests, run_config
from fpac_async.cli_parser import FpacParser
from fpac_async.config import ConfigError, RunConfig, config_json, resolve
from fpac_async.agent.pretrained_points import check_pretrained
from learner.exposure import exposure_warning
from learner.run_dir import finished, made_by_us, remove_if_unstarted

log = logging.getLogger("fpac-train")

CPU_PIXELS_NOTE = ("NOTE: no GPU found; the learner runs on the CPU. Learning from {size}x{size} "
                   "pixels on a CPU is very slow (about 1 s per SAC update at 84x84 on a 2-core "
                   "machine), so this run will make little progress; use a machine with an NVIDIA "
                   "GPU for real runs. Running anyway.")


def build_parser() -> argparse.ArgumentParser:
    parser = FpacParser(
        prog="fpac-train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--actors", type=int, default=None,
                        help="actor processes (default: from the core count, at least 1)")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue the stopped run in RUN_DIR from its latest checkpoint")
    parser.add_argument("--gif", action=argparse.BooleanOptionalAction, default=True,
                        help="record an evaluation GIF with the feature points at the end")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level")
    parser.add_argument("--auth", metavar="DIR", default=None,
                        help="CurveZMQ between learner and actors (even on loopback): keys from "
                             "DIR, made by fpac-keys DIR")
    parser.add_argument("--auth-key", metavar="NAME", default="actor-0",
                        help="with --auth: the actors' and evaluator's key, "
                             "DIR/actors_secret/NAME.key_secret")
    parser.add_argument("--print-config", action="store_true",
                        help="print the run's resolved config (task defaults under the flags) "
                             "as JSON and exit")
    defaults = RunConfig()
    # "" = pick at run time (a free loopback port / runs/<task>-<time>); GPU only if there is one.
    defaults = dataclasses.replace(
        defaults, run_dir="",
        learner=dataclasses.replace(defaults.learner, bind="",
                                    gpus=1 if torch.cuda.is_available() else 0))
    add_config_args(parser, defaults=defaults)
    return parser


def make_config(args: argparse.Namespace, argv: Sequence[str],
                parser: argparse.ArgumentParser) -> RunConfig:
    """The run's config: fresh from the flags, or RUN_DIR/config.json plus the flags given."""
    given = explicit_dests(parser, argv)
    cfg = run_config(parser, args, argv, args.resume)
    if args.resume:
        cfg = dataclasses.replace(cfg, run_dir=args.resume)
        learner = cfg.learner
        if "learner.bind" not in given:  # the old port may be taken by now
            learner = dataclasses.replace(learner, bind="")
        if "learner.gpus" not in given:  # this machine's devices, not the stopped run's
            learner = dataclasses.replace(learner, gpus=1 if torch.cuda.is_available() else 0)
        cfg = dataclasses.replace(cfg, learner=learner)
    if not cfg.run_dir:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%SZ")
        cfg = dataclasses.replace(cfg, run_dir=os.path.join("runs", f"{cfg.env.task}-{stamp}"))
    if not cfg.learner.bind:
        from fpac_async.wire.transport import free_port_pair  # noqa: PLC0415
        bind = f"tcp://127.0.0.1:{free_port_pair()}"
        cfg = dataclasses.replace(cfg, learner=dataclasses.replace(cfg.learner, bind=bind))
    return resolve(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = make_config(args, argv, parser)
        if not args.print_config:
            check_pretrained(cfg.agent)  # --encoder pretrained: its file, before anything starts
        warning = exposure_warning(cfg.learner.bind, args.auth)
    except (ConfigError, RuntimeError, ValueError) as e:
        print(f"fpac-train: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(config_json(cfg))
        return 0
    done = finished(cfg.run_dir, cfg.env_steps) if args.resume else None
    if done:
        print(f"fpac-train: {done}", flush=True)
        return 0
    fresh = made_by_us(cfg.run_dir)
    try:
        code = _train(args, cfg, warning)
    except KeyboardInterrupt:  # before the learner's own SIGINT handler was installed
        print("fpac-train: interrupted while starting", file=sys.stderr)
        code = 128 + signal.SIGINT
    if code == 2:
        removed = fresh and remove_if_unstarted(cfg.run_dir)
        print("fpac-train: exit code 2: the run could not start (see the error above)"
              + (f"; {cfg.run_dir} was not created" if removed else ""), file=sys.stderr,
              flush=True)
    return code


def _train(args: argparse.Namespace, cfg: RunConfig, warning: str | None) -> int:
    """Start the learner and the actors; the exit code (see the module docstring)."""
    from deploy import local_run  # noqa: PLC0415 (after the cheap argument checks)
    from learner.cli import setup_logging  # noqa: PLC0415

    gpu = cfg.learner.gpus > 0
    actors = args.actors if args.actors is not None else local_run.default_actor_count(
        os.cpu_count(), gpu)
    if actors < 1:
        print("fpac-train: --actors must be >= 1", file=sys.stderr)
        return 2
    setup_logging(cfg.run_dir, args.log_level)
    if warning:
        log.warning("%s", warning)
    if cfg.env.backend != "numpy" and cfg.agent.encoder != "state":  # state: nothing renders
        from actors.envs.render_probe import RenderingError, probe_rendering  # noqa: PLC0415
        try:
            from actors.envs.egl_vendor import prefer_gpu_rendering  # noqa: PLC0415
            renderer = prefer_gpu_rendering(lambda: probe_rendering(
                cfg.env.backend, cfg.env.task, image_size=cfg.env.image_size,
                camera=cfg.env.camera))
        except RenderingError as e:
            log.error("cannot render %s on %s: %s", cfg.env.task, cfg.env.backend, e)
            return 2
        log.info("rendering %s on %s with %s", cfg.env.task, cfg.env.backend, renderer)
        if not gpu and cfg.agent.encoder != "state":
            print(CPU_PIXELS_NOTE.format(size=cfg.env.image_size), file=sys.stderr, flush=True)
    if not gpu:
        # A CPU learner sets the pace (replay ratio 1: one agent step per update), so an actor
        # needs a few percent of a core (one render and one policy step per update): the SAC
        # updates get every core.
        torch.set_num_threads(os.cpu_count() or 1)
    log.info("%s run %s: task %s, %d actors, learner on %s at %s, budget %d env steps",
             "resuming" if args.resume else "starting", cfg.run_dir, cfg.env.task, actors,
             "cuda:0" if gpu else "cpu", cfg.learner.bind, cfg.env_steps)
    from fpac_async.wire.auth import AuthError  # noqa: PLC0415
    try:
        run = local_run.LocalRun(cfg, actors, resume=bool(args.resume), auth_dir=args.auth,
                                 auth_key=args.auth_key)
    except AuthError as e:
        log.error("%s", e)
        return 2
    code = run.run()
    if code != 2:  # 2: nothing ran (main says so)
        report(cfg, code, gif=args.gif and code == 0)
    return code


def report(cfg: RunConfig, code: int, gif: bool) -> None:
    """Write the plot (and GIF) and print where every artefact of the run is."""
    from deploy.plots import plot_learning_curve, read_metrics  # noqa: PLC0415

    d = cfg.run_dir
    lines = [f"run directory:  {d}"]
    metrics = os.path.join(d, "metrics.jsonl")
    if os.path.exists(metrics):
        evals = [r for r in read_metrics(metrics) if r.get("eval_env_steps") is not None]
        if evals:
            lines.append(f"final eval:     return {evals[-1]['eval_return']:.2f} at "
                         f"{evals[-1]['eval_env_steps']} env steps")
        lines.append(f"metrics:        {metrics} and {os.path.join(d, 'metrics.csv')}")
    lines.append(f"TensorBoard:    tensorboard --logdir {os.path.join(d, 'tb')}")
    latest = os.path.join(d, "checkpoints", "latest")
    if os.path.exists(latest):
        with open(latest, encoding="utf-8") as f:
            lines.append(f"checkpoint:     {os.path.join(d, 'checkpoints', f.read().strip())}")
    policy = os.path.join(d, "policy.pt")
    if os.path.exists(policy):
        lines.append(f"policy:         {policy} (torch.jit.load)")
    plot = plot_learning_curve(d)
    if plot:
        lines.append(f"learning curve: {plot}")
    if gif and cfg.agent.encoder == "fpac" and os.path.exists(policy):
        from deploy.feature_point_gif import record_episode_gif  # noqa: PLC0415
        try:
            path, ret = record_episode_gif(policy, cfg.env, os.path.join(d, "feature_points.gif"))
            lines.append(f"episode GIF:    {path} (feature points drawn, return {ret:.2f})")
        except (RuntimeError, OSError, ValueError) as e:  # an extra: the run itself is done
            log.warning("could not record the feature-point GIF: %s", e)
    if code not in (0, 2) and os.path.exists(latest):  # 2: the resume itself failed
        lines.append(f"continue with:  fpac-train --resume {d}")
    print("\n".join(["", f"fpac-train: exit code {code}", *lines]), flush=True)


if __name__ == "__main__":
    sys.exit(main())
