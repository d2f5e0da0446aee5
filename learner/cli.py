"""`fpac-learner`: run the learner service.

    fpac-learner --gpus 1 --task cartpole_swingup --run-dir runs/NAME [--bind tcp://*:5555] [--resume]

Every config field is a flag (fpac_async.cli_args). With --resume the learner continues the run in
--run-dir from its latest checkpoint, with the run's config.json plus only the flags given again. Logs go to the console and
to run_dir/learner.log. The exit code is LearnerService.run()'s (0 done, 2 could not start,
128 + signal after SIGTERM/SIGINT, 1 failure).

Issue 20: --bind defaults to loopback, and a bind beyond it without --auth logs one warning
(learner.exposure); a run that cannot start (exit 2) leaves no run directory it created; --resume
of a finished run says so and exits 0 (learner.run_dir); the console shows fpac-train's progress
line (learner.progress); Ctrl-C before the learner is up exits 130 without a traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from fpac_async.cli_parser import FpacParser
from typing import Sequence

from fpac_async.cli_args import add_config_args, run_config
from fpac_async.config import ConfigError, RunConfig, config_json, resolve
from fpac_async.agent.pretrained_points import check_pretrained
from learner.exposure import exposure_warning
from learner.run_dir import finished, made_by_us, remove_if_unstarted
from learner.service import LearnerService

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    parser = FpacParser(
        prog="fpac-learner", description="FPAC learner: receives actor transitions, trains SAC at "
        "the configured replay ratio, broadcasts the policy, checkpoints, evaluates and logs.")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --run-dir from its latest checkpoint")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="console/file log level")
    parser.add_argument("--print-config", action="store_true",
                        help="print the run's resolved config (task defaults under the flags) "
                             "as JSON and exit")
    parser.add_argument("--auth", metavar="DIR", default=None,
                        help="CurveZMQ: encrypt all three sockets with DIR/learner.key_secret and "
                             "accept only actors whose public keys are in DIR/actors "
                             "(create DIR with fpac-keys)")
    add_config_args(parser)
    return parser


def setup_logging(run_dir: str, level: str) -> None:
    """Console (stderr) and run_dir/learner.log (appended on resume)."""
    os.makedirs(run_dir, exist_ok=True)
    root = logging.getLogger()
    root.setLevel(level)
    formatter = logging.Formatter(LOG_FORMAT)
    for handler in (logging.StreamHandler(sys.stderr),
                    logging.FileHandler(os.path.join(run_dir, "learner.log"), encoding="utf-8")):
        handler.setFormatter(formatter)
        root.addHandler(handler)


def make_config(parser: argparse.ArgumentParser, args: argparse.Namespace,
                argv: Sequence[str]) -> RunConfig:
    """fpac_async.cli_args.run_config, resuming the run in --run-dir when --resume is given."""
    return run_config(parser, args, argv, getattr(args, "run.run_dir") if args.resume else None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = make_config(parser, args, argv)
        if args.print_config:
            print(config_json(resolve(cfg)))
            return 0
        check_pretrained(cfg.agent)  # --encoder pretrained: its file, before anything starts
        warning = exposure_warning(cfg.learner.bind, args.auth)
    except (ConfigError, ValueError) as e:
        print(f"fpac-learner: {e}", file=sys.stderr)
        return 2
    done = finished(cfg.run_dir, cfg.env_steps) if args.resume else None
    if done:
        print(f"fpac-learner: {done}", flush=True)
        return 0
    fresh = made_by_us(cfg.run_dir)
    setup_logging(cfg.run_dir, args.log_level)
    if warning:
        logging.getLogger("fpac-learner").warning("%s", warning)
    try:
        code = LearnerService(cfg, resume=args.resume, auth_dir=args.auth).run()
    except KeyboardInterrupt:  # before the learner's own SIGINT handler was installed
        print("fpac-learner: interrupted while starting", file=sys.stderr)
        code = 128 + signal.SIGINT
    if code == 2 and fresh:
        remove_if_unstarted(cfg.run_dir)
    return code


if __name__ == "__main__":
    sys.exit(main())
