"""The run settings that actors, evaluators and the learner must agree on (issue: an actor started
with other flags than its learner must be refused, never feed it wrong data silently).

Every actor and evaluator puts `run_settings(...)` in its hello; the learner compares it with its
own and answers a mismatch with a `refuse` message naming each difference. The actor then exits
with EXIT_REFUSED, which its supervisor does not restart (restarting cannot fix a flag).
"""
from __future__ import annotations

from typing import Any

from fpac_async.config import EnvConfig

EXIT_REFUSED = 3  # an actor/evaluator process refused by the learner: a configuration error


def run_settings(env: EnvConfig, frame_stack: int, encoder: str) -> dict[str, Any]:
    """What changes the data an actor produces, from a RESOLVED env config and the agent's frame
    stack and encoder ('state' needs no pixels)."""
    return {"backend": env.backend, "action_repeat": int(env.action_repeat),
            "camera": int(env.camera), "image_size": int(env.image_size),
            "episode_control_steps": int(env.episode_control_steps),
            "render_quality": env.render_quality, "frame_stack": int(frame_stack),
            "pixels": encoder != "state",  # what the encoder changes in an actor's data
            "state_source": env.state_source, "camera_measure": env.camera_measure}


def mismatches(expected: dict[str, Any], got: dict[str, Any] | None) -> list[str]:
    """Human-readable differences between the learner's settings and an actor's ([] if none)."""
    if got is None:
        return ["its hello carries no settings (an older fpac-actors?)"]
    diff = []
    for key, want in expected.items():
        if key not in got:
            diff.append(f"{key} not sent (learner: {want!r})")
        elif got[key] != want:
            if key == "pixels":
                diff.append(f"--encoder {'needing' if got[key] else 'without'} pixels (learner: "
                            f"{'an encoder of pixels' if want else '--encoder state'})")
                continue
            flag = "--" + key.replace("_", "-")
            diff.append(f"{flag} {got[key]!r} (learner: {want!r})")
    return diff
