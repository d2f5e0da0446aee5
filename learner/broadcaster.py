"""The learner's PUB socket: policy, weights, evaluation requests, refusals and the stop message.

Only the main thread calls these (zmq sockets are not thread-safe). PUB never blocks: a slow
subscriber past its high-water mark misses a message, and the next broadcast replaces it.

The TorchScript policy (code + weights at export time) is exported once and cached for as long as
the weights layout (the architecture) stays the same; every `policy` message carries the current
flat weights next to it, which the actor loads into the script (fpac_async.agent.export). A `weights`
message carries the flat weights alone, with `random = False` (the learner sends no weights
during the random phase): f32, or with `--weights-wire bf16` their bf16 rounding (half the bytes;
fpac_async/wire/bf16.py). Policy messages (the first, a new actor's, a learner restart's) are f32.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import zmq

from fpac_async.agent.export import PolicyModule, export_policy, flat_weights, script_to_bytes
from fpac_async.wire.protocol import (Message, eval_message, grant_message, policy_message,
                                      refuse_message, stop_message, weights_message)
from fpac_async.wire.transport import send_message

log = logging.getLogger(__name__)


def policy_weights(sac: Any) -> tuple[np.ndarray, list]:
    """Flat f32 weights of the SAC's online encoder + actor, in the exported script's order.

    PolicyModule only registers the SAC's modules as children (no copy), so its state_dict names
    and order are exactly those of the exported script's."""
    view = PolicyModule(sac.encoder, sac.actor)
    flat, layout = flat_weights(view)
    return np.ascontiguousarray(flat, dtype=np.float32), [[n, list(s)] for n, s in layout]


class Broadcaster:
    """Publishes learner -> actor messages on `sock` (a bound PUB socket)."""

    def __init__(self, sock: zmq.Socket, run: int | None = None, bf16: bool = False) -> None:
        self.sock = sock
        self.run = run  # this learner process's id, in every policy and weights message
        self.bf16 = bf16  # weights messages carry bf16 weights (policy messages stay f32)
        self.seq = 0
        self.sent: dict[str, int] = {}
        self._script: bytes | None = None
        self._script_layout: list | None = None

    def _send(self, msg: Message) -> None:
        msg.seq = self.seq
        self.seq += 1
        send_message(self.sock, msg)
        self.sent[msg.kind] = self.sent.get(msg.kind, 0) + 1

    def script_bytes(self, sac: Any, layout: list) -> bytes:
        """The cached TorchScript bytes, re-exported only when the weights layout changes."""
        if self._script is None or layout != self._script_layout:
            with torch.no_grad():
                self._script = script_to_bytes(export_policy(sac))
            self._script_layout = layout
            log.info("exported the TorchScript policy (%d bytes)", len(self._script))
        return self._script

    def publish_policy(self, sac: Any, version: int, random: bool) -> None:
        """TorchScript + current weights; actors start acting with it (randomly while `random`)."""
        flat, layout = policy_weights(sac)
        script = self.script_bytes(sac, layout)
        self._send(policy_message(0, version, script, flat, layout, random=random, run=self.run))

    def publish_weights(self, sac: Any, version: int) -> None:
        """The current weights as policy `version` (random = False from here on)."""
        flat, layout = policy_weights(sac)
        self._send(weights_message(0, version, flat, layout, random=False, run=self.run,
                                   bf16=self.bf16))

    def publish_grant(self, version: int, actors: list[int], upto: list[int]) -> None:
        """Actor actors[i] may run its streams to record upto[i] (learner/pacing.py)."""
        self._send(grant_message(0, version, actors, upto, run=self.run))

    def publish_eval(self, version: int, eval_id: int, episodes: int, target: int) -> None:
        """Ask evaluator `target` for `episodes` deterministic episodes of policy `version`."""
        self._send(eval_message(0, version, eval_id, episodes, target))

    def publish_refuse(self, version: int, target: int, role: str, reason: str) -> None:
        """Tell one actor or evaluator that its settings disagree with the run's (it exits)."""
        self._send(refuse_message(0, version, target, role, reason))

    def publish_stop(self, version: int) -> None:
        """The run is over: actors exit and their supervisor does not restart them."""
        self._send(stop_message(0, version))
