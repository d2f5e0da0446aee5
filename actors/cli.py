"""`fpac-actors`: start N actor processes that stream transitions to a learner.

    fpac-actors --n 32 --task cartpole_swingup --learner HOST:5555
    fpac-actors --n 0 --evaluator --task cartpole_swingup --learner HOST:5555   # evaluator only

`--evaluator` adds one evaluator process (the deterministic evaluation episodes; a run needs one
somewhere). Give the actors the learner's flags (task, env and --frame-stack / --encoder): the
learner refuses an actor whose settings differ, and it exits with code 3 (EXIT_REFUSED).

Rendering is probed once (in a child process) before any actor starts, so a machine that cannot
render fails fast with the fix named (exit code 2) instead of 32 crash-looping children.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from fpac_async.cli_parser import FpacParser
from fpac_async.cli_args import add_config_args, config_from_args
from fpac_async.wire.auth import DEFAULT_ACTOR_KEY, export_client_keys
from fpac_async.config import ConfigError, EnvConfig, resolve
from fpac_async.wire.transport import actor_endpoints

ENV_FLAGS = {f.name for f in dataclasses.fields(EnvConfig)} | {"seed", "frame_stack", "encoder",
                                                              "eval_episodes"}

log = logging.getLogger("fpac-actors")


def build_parser() -> argparse.ArgumentParser:
    parser = FpacParser(
        prog="fpac-actors", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1, help="actor processes on this machine")
    parser.add_argument("--evaluator", action="store_true",
                        help="also run one evaluator process (evaluation episodes)")
    parser.add_argument("--learner", default="localhost:5555",
                        help="learner HOST:PORT (data on PORT, broadcasts on PORT+1, "
                             "evaluators' control on PORT+2)")
    parser.add_argument("--actor-id-offset", type=int, default=0,
                        help="first actor id here (give each machine its own range)")
    parser.add_argument("--steps-per-message", type=int, default=16,
                        help="records per env per steps message")
    parser.add_argument("--max-restarts", type=int, default=0,
                        help="restarts of one actor in a row (no stable run between) before its "
                             "slot is given up; 0: never give up (restarts back off instead)")
    parser.add_argument("--restart-backoff-s", type=float, default=1.0,
                        help="delay before restarting a crashed actor; doubles with each crash "
                             "in a row (Kubernetes' CrashLoopBackOff)")
    parser.add_argument("--restart-backoff-max-s", type=float, default=60.0,
                        help="cap of the doubling restart delay")
    parser.add_argument("--restart-reset-s", type=float, default=60.0,
                        help="an actor that ran this long before crashing restarts after "
                             "--restart-backoff-s again")
    parser.add_argument("--stats-every-s", type=float, default=30.0,
                        help="seconds between per-actor stats tables")
    parser.add_argument("--no-reply-warn-s", type=float, default=30.0,
                        help="seconds without a reply from the learner before the first actor "
                             "says so (then every 5 min)")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--auth", metavar="DIR", default=None,
                        help="CurveZMQ: connect with DIR/actors_secret/NAME.key_secret to the "
                             "learner whose public key is DIR/learner.key (see fpac-keys)")
    parser.add_argument("--auth-key", metavar="NAME", default=DEFAULT_ACTOR_KEY,
                        help="with --auth: this machine's key name")
    add_config_args(parser, only=ENV_FLAGS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = resolve(config_from_args(args))
        actor_endpoints(args.learner)
        export_client_keys(args.auth, args.auth_key)  # spawned actors inherit it; AuthError
        if args.n < 0 or args.n + args.evaluator < 1 or args.steps_per_message < 1:
            raise ConfigError("--n must be >= 1 (or 0 with --evaluator) and "
                              "--steps-per-message >= 1")
        if not 0 < args.restart_backoff_s <= args.restart_backoff_max_s \
                or args.restart_reset_s < 0 or args.max_restarts < 0:
            raise ConfigError("need 0 < --restart-backoff-s <= --restart-backoff-max-s, "
                              "--restart-reset-s >= 0 and --max-restarts >= 0")
    except (ConfigError, ValueError) as e:
        print(f"fpac-actors: {e}", file=sys.stderr)
        return 2
    if cfg.agent.encoder != "state":  # the state encoder needs no pixels: nothing renders
        from actors.envs.render_probe import RenderingError, probe_rendering  # noqa: PLC0415
        try:
            from actors.envs.egl_vendor import prefer_gpu_rendering  # noqa: PLC0415
            renderer = prefer_gpu_rendering(lambda: probe_rendering(
                cfg.env.backend, cfg.env.task, image_size=cfg.env.image_size,
                camera=cfg.env.camera))
        except RenderingError as e:
            print(f"fpac-actors: cannot render {cfg.env.task} on {cfg.env.backend}: {e}",
                  file=sys.stderr)
            return 2
        log.info("rendering %s on %s with %s", cfg.env.task, cfg.env.backend, renderer)
    from actors.supervisor import Supervisor  # noqa: PLC0415
    supervisor = Supervisor(args.n, cfg.env, args.learner, seed=cfg.seed,
                            actor_id_offset=args.actor_id_offset,
                            steps_per_message=args.steps_per_message,
                            max_restarts=args.max_restarts,
                            restart_backoff_s=args.restart_backoff_s,
                            restart_backoff_max_s=args.restart_backoff_max_s,
                            restart_reset_s=args.restart_reset_s,
                            stats_every_s=args.stats_every_s,
                            frame_stack=cfg.agent.frame_stack, encoder=cfg.agent.encoder,
                            evaluators=int(args.evaluator),
                            eval_episodes=cfg.learner.eval_episodes,
                            no_reply_warn_s=args.no_reply_warn_s)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
