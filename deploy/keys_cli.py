"""`fpac-keys DIR`: write a learner keypair and actor keypairs for `--auth DIR` (CurveZMQ).

    fpac-keys keys/ --actors 4      # keys/learner.key(_secret), keys/actors/actor-{0..3}.key,
                                    # keys/actors_secret/actor-{0..3}.key_secret

Existing keys are never overwritten: running it again with a larger --actors adds the missing
actors only. Secret keys are written 0600 (their folder 0700). The layout is explained in
fpac_async/wire/auth.py. Exit code 0 on success, 2 if DIR cannot be used.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Sequence

import zmq.auth

from fpac_async.cli_parser import FpacParser
from fpac_async.wire.auth import LEARNER, PUBLIC_DIR, SECRET_DIR, AuthError

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _keypair(folder: str, name: str) -> tuple[str, str]:
    """zmq.auth.create_certificates with a 0077 umask: the secret file is never readable by
    others, not even for a moment."""
    old = os.umask(0o077)
    try:
        public, secret = zmq.auth.create_certificates(folder, name)
    finally:
        os.umask(old)
    os.chmod(public, 0o644)
    os.chmod(secret, 0o600)
    return public, secret


def create_keys(keys_dir: str, actors: int = 1, names: Sequence[str] = ()) -> list[str]:
    """Create what is missing of: the learner keypair, actor-0..actor-{actors-1} and any extra
    `names`. Returns the files written (none if everything existed)."""
    wanted = [f"actor-{i}" for i in range(actors)] + list(names)
    bad = [n for n in wanted if not _NAME.match(n) or n == LEARNER]
    if bad:
        raise AuthError(f"invalid actor key names {bad}: use letters, digits, '.', '_', '-'")
    if os.path.exists(keys_dir) and not os.path.isdir(keys_dir):
        raise AuthError(f"{keys_dir} exists and is not a directory")
    public_dir, secret_dir = os.path.join(keys_dir, PUBLIC_DIR), os.path.join(keys_dir, SECRET_DIR)
    for folder, mode in ((keys_dir, 0o755), (public_dir, 0o755), (secret_dir, 0o700)):
        os.makedirs(folder, mode=mode, exist_ok=True)
    os.chmod(secret_dir, 0o700)
    written: list[str] = []
    if not os.path.exists(os.path.join(keys_dir, LEARNER + ".key_secret")):
        written += _keypair(keys_dir, LEARNER)
    for name in wanted:
        if os.path.exists(os.path.join(secret_dir, name + ".key_secret")):
            continue
        public, secret = _keypair(secret_dir, name)  # both in the 0700 folder, then publish one
        published = os.path.join(public_dir, name + ".key")
        os.replace(public, published)
        written += [published, secret]
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = FpacParser(prog="fpac-keys", description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", help="key directory (created if missing)")
    parser.add_argument("--actors", type=int, default=1,
                        help="actor keypairs actor-0 .. actor-{N-1} (one per actor machine)")
    parser.add_argument("--name", action="append", default=[],
                        help="an extra actor keypair with this name (repeatable)")
    args = parser.parse_args(argv)
    if args.actors < 0:
        print("fpac-keys: --actors must be >= 0", file=sys.stderr)
        return 2
    try:
        written = create_keys(args.dir, args.actors, args.name)
    except (AuthError, OSError) as e:
        print(f"fpac-keys: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    if not written:
        print(f"fpac-keys: every key already exists in {args.dir}; nothing written")
    print(f"learner machine: fpac-learner --auth {args.dir} (needs {LEARNER}.key_secret and "
          f"{PUBLIC_DIR}/); actor machine: fpac-actors --auth DIR --auth-key NAME (needs "
          f"{LEARNER}.key and {SECRET_DIR}/NAME.key_secret)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
