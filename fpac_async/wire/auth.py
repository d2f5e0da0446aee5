"""CurveZMQ keys (the Ironhouse pattern): who may connect to a learner, and how traffic is encrypted.

Key directory layout (written by `fpac-keys DIR`, deploy/keys_cli.py):

    DIR/learner.key                    the learner's public key (every actor machine needs it)
    DIR/learner.key_secret             the learner's secret key (only the learner machine), 0600
    DIR/actors/actor-N.key             public keys of the actors the learner accepts
    DIR/actors_secret/actor-N.key_secret   each actor's secret key (0600; the folder 0700)

With `--auth DIR` the learner makes all three of its sockets CURVE servers with its secret key and
accepts a connection only if the peer's public key is a file in DIR/actors (a ZAP handler,
learner/auth_guard.py); remove a file there (and restart the learner) to revoke an actor. An actor
machine needs DIR/learner.key and its own DIR/actors_secret/NAME.key_secret (`--auth-key NAME`).
The files are pyzmq's certificate format (zmq.auth.create_certificates / load_certificate).

Actor and evaluator processes are spawned by actors.supervisor; they find their keys in the
environment (ENV_DIR, ENV_KEY), which fpac-actors / fpac-train set before spawning them.
"""
from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from typing import Callable

import zmq
import zmq.auth
from zmq.utils import z85

log = logging.getLogger(__name__)

LEARNER = "learner"
PUBLIC_DIR = "actors"  # the learner's allow-list: one ACTOR.key per accepted actor
SECRET_DIR = "actors_secret"
DEFAULT_ACTOR_KEY = "actor-0"
ENV_DIR, ENV_KEY = "FPAC_AUTH_DIR", "FPAC_AUTH_KEY"  # how spawned actors find their keys


class AuthError(ValueError):
    """A key directory or key file that cannot be used (the message names the file and the fix)."""


def _check_key(key: bytes | None, path: str, what: str) -> bytes:
    try:
        ok = key is not None and len(z85.decode(key)) == 32
    except (ValueError, TypeError, KeyError, IndexError):
        ok = False
    if not ok:
        raise AuthError(f"{path}: no valid {what} key in it (40 Z85 characters); "
                        f"regenerate with `fpac-keys DIR`")
    assert key is not None
    return key


def load_key_file(path: str, secret: bool) -> tuple[bytes, bytes | None]:
    """(public, secret) from one certificate file; AuthError if it is missing or malformed."""
    if not os.path.isfile(path):
        raise AuthError(f"{path}: no such key file (create keys with `fpac-keys DIR`)")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise AuthError(f"{path}: not a key file: {e}") from None
    _check_key(public, path, "public")
    if secret:
        _check_key(secret_key, path, "secret")
        if os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("%s: a secret key readable by other users; chmod 600 it", path)
    return public, secret_key


@dataclass(frozen=True)
class ServerKeys:
    """The learner's side: its keypair and the folder of accepted actor public keys."""

    public: bytes
    secret: bytes
    allowed_dir: str
    allowed: int  # how many actor keys were listed when loaded

    def apply(self, sock: zmq.Socket) -> None:
        """Make `sock` a CURVE server (before bind): encrypted, and ZAP checks every peer."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True


@dataclass(frozen=True)
class ClientKeys:
    """An actor's side: its keypair and the learner's public key it expects to talk to."""

    public: bytes
    secret: bytes
    server: bytes
    name: str

    def apply(self, sock: zmq.Socket) -> None:
        """Make `sock` a CURVE client (before connect) of the learner with key `server`."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = self.server


def _need_dir(keys_dir: str) -> None:
    if not os.path.isdir(keys_dir):
        raise AuthError(f"--auth {keys_dir}: no such directory (create it with "
                        f"`fpac-keys {keys_dir}`)")


def load_server_keys(keys_dir: str) -> ServerKeys:
    _need_dir(keys_dir)
    public, secret = load_key_file(os.path.join(keys_dir, LEARNER + ".key_secret"), secret=True)
    allowed_dir = os.path.join(keys_dir, PUBLIC_DIR)
    names = sorted(f for f in os.listdir(allowed_dir) if f.endswith(".key")) \
        if os.path.isdir(allowed_dir) else []
    if not names:
        raise AuthError(f"{allowed_dir}: no actor public keys (*.key): no actor could connect; "
                        f"create some with `fpac-keys {keys_dir} --actors N`")
    for name in names:
        load_key_file(os.path.join(allowed_dir, name), secret=False)
    assert secret is not None
    return ServerKeys(public, secret, allowed_dir, len(names))


def load_client_keys(keys_dir: str, name: str = DEFAULT_ACTOR_KEY) -> ClientKeys:
    _need_dir(keys_dir)
    server, _ = load_key_file(os.path.join(keys_dir, LEARNER + ".key"), secret=False)
    public, secret = load_key_file(os.path.join(keys_dir, SECRET_DIR, name + ".key_secret"),
                                   secret=True)
    assert secret is not None
    return ClientKeys(public, secret, server, name)


def export_client_keys(keys_dir: str | None, name: str = DEFAULT_ACTOR_KEY) -> ClientKeys | None:
    """Check the keys now (a clear error before any process starts) and put them in this
    process's environment, which spawned actors and evaluators inherit. None: no --auth."""
    if keys_dir is None:
        os.environ.pop(ENV_DIR, None)
        os.environ.pop(ENV_KEY, None)
        return None
    keys = load_client_keys(keys_dir, name)
    os.environ[ENV_DIR], os.environ[ENV_KEY] = os.path.abspath(keys_dir), name
    return keys


def client_keys_from_env() -> ClientKeys | None:
    """The keys fpac-actors / fpac-train exported (export_client_keys), or None (plain TCP)."""
    keys_dir = os.environ.get(ENV_DIR)
    if not keys_dir:
        return None
    return load_client_keys(keys_dir, os.environ.get(ENV_KEY) or DEFAULT_ACTOR_KEY)


def secure_client(keys: ClientKeys | None) -> Callable[[zmq.Socket], None] | None:
    """The `secure` argument of the transport socket factories: CURVE client keys, or plain."""
    return None if keys is None else keys.apply
