"""The one-line warning for a learner that binds beyond loopback without --auth (issue 20).

fpac-learner binds loopback by default (LearnerConfig.bind). A --bind on any other address
without --auth exposes the learner's three ports, unencrypted and unauthenticated, to everyone
who can reach them: anyone may feed it transitions (they go into the replay and the training)
and read every policy it broadcasts. Cluster setups do this on purpose on private networks; the
warning says so once, it does not refuse.
"""
from __future__ import annotations

import ipaddress

from fpac_async.wire.transport import learner_endpoints

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the usual loopback names; False for '*' and the rest."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name, or '*'
        return False


def exposure_warning(bind: str, auth_dir: str | None) -> str | None:
    """The warning line for `--bind bind` without --auth beyond loopback, else None."""
    if auth_dir is not None:
        return None
    ep = learner_endpoints(bind)  # ValueError for a malformed --bind: the learner reports it
    host, port = ep.data.rsplit(":", 1)[0].split("://", 1)[1], int(ep.data.rsplit(":", 1)[1])
    if is_loopback(host):
        return None
    where = "every interface" if host in ("*", "0.0.0.0", "::") else host
    return (f"WARNING: --bind {bind} without --auth: ports {port}-{port + 2} on {where} accept "
            f"anyone who reaches them, unencrypted: they can send this learner training data and "
            f"read its policy; use --auth DIR (fpac-keys) or bind 127.0.0.1")
