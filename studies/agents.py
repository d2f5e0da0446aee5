"""Named agents (fpac-train flag presets, studies/agents.json) and their check against fpac-train.

An agent is a name for a list of fpac-train flags: "sac-state" is `--encoder state`, "fig8-k8" is
`--num-points 8`. Groups name the agents of one figure of the paper ("fig8"). A user's own file
(--agents-file) adds agents or replaces built-in ones of the same name.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

BUILTIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "agents.json")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class AgentError(ValueError):
    """An agent that cannot be run; the message says which and why."""


@dataclass(frozen=True)
class Agent:
    name: str
    flags: tuple[str, ...]
    needs: tuple[str, ...] = ()
    about: str = ""
    figure: str = ""
    requires: str = ""


@dataclass
class Catalogue:
    agents: dict[str, Agent] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)

    def expand(self, names: Sequence[str]) -> list[str]:
        """Agent names with group names replaced by their agents, in order, without repeats."""
        out: list[str] = []
        for name in names:
            members = self.groups.get(name, [name])
            for m in members:
                if m not in self.agents:
                    raise AgentError(f"unknown agent {m!r}; known agents: "
                                     f"{', '.join(sorted(self.agents))}; groups: "
                                     f"{', '.join(sorted(self.groups))}")
                if m not in out:
                    out.append(m)
        return out


def _parse(data: dict, source: str) -> Catalogue:
    if not isinstance(data, dict) or not isinstance(data.get("agents", {}), dict):
        raise AgentError(f"{source}: expected an object with an 'agents' object")
    cat = Catalogue()
    for name, spec in data.get("agents", {}).items():
        flags = spec.get("flags") if isinstance(spec, dict) else None
        if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
            raise AgentError(f"{source}: agent {name!r} needs 'flags', a list of strings")
        if "/" in name or name.startswith("."):
            raise AgentError(f"{source}: agent name {name!r} cannot be a directory name")
        cat.agents[name] = Agent(name, tuple(flags), tuple(spec.get("needs", ())),
                                 spec.get("about", ""), spec.get("figure", ""),
                                 spec.get("requires", ""))
    for group, members in data.get("groups", {}).items():
        if not isinstance(members, list):
            raise AgentError(f"{source}: group {group!r} must be a list of agent names")
        cat.groups[group] = list(members)
    return cat


def load_catalogue(extra_file: str | None = None) -> Catalogue:
    """The built-in agents, plus (over them) those of `extra_file`."""
    with open(BUILTIN, encoding="utf-8") as f:
        cat = _parse(json.load(f), BUILTIN)
    if extra_file:
        try:
            with open(extra_file, encoding="utf-8") as f:
                extra = _parse(json.load(f), extra_file)
        except (OSError, json.JSONDecodeError) as e:
            raise AgentError(f"cannot read agents file {extra_file}: {e}") from e
        cat.agents.update(extra.agents)
        cat.groups.update(extra.groups)
    return cat


def missing_needs(agent: Agent, extra_flags: Sequence[str]) -> list[str]:
    """The agent's needed flags (e.g. --pretrained PATH) found neither in its own nor the extra flags."""
    given = {f.split("=", 1)[0] for f in (*agent.flags, *extra_flags)}
    return [n for n in agent.needs if n not in given]


def print_config(task: str, flags: Sequence[str], python: str = sys.executable) -> dict:
    """The config fpac-train resolves for `--task task flags` (it exits before starting anything).
    AgentError with fpac-train's own message when the installed fpac-train refuses the flags."""
    cmd = [python, "-m", "deploy.train_cli", "--task", task, *flags, "--print-config"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        msg = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise AgentError(msg)
    return json.loads(proc.stdout)


def check_agents(cat: Catalogue, pairs: Sequence[tuple[str, str]],
                 extra_flags: Sequence[str]) -> dict[tuple[str, str], dict]:
    """Every (task, agent) of `pairs` as fpac-train would resolve it (a few fpac-train processes
    at a time); all refusals in one AgentError."""
    problems, todo = [], []
    for name in dict.fromkeys(a for _, a in pairs):
        missing = missing_needs(cat.agents[name], extra_flags)
        if missing:
            problems.append(f"agent {name!r} needs {' '.join(missing)} (add it with --train-flags "
                            f"or define the agent in your own --agents-file)")
        else:
            todo += [(t, a) for t, a in pairs if a == name]

    def check(pair: tuple[str, str]) -> dict | str:
        task, name = pair
        agent = cat.agents[name]
        try:
            return print_config(task, [*agent.flags, *extra_flags])
        except AgentError as e:
            hint = f" (needs {agent.requires})" if agent.requires else ""
            return (f"agent {name!r} on {task}: fpac-train refuses "
                    f"{' '.join(agent.flags + tuple(extra_flags)) or 'its flags'}{hint}: {e}")

    configs = {}
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        for pair, result in zip(todo, pool.map(check, todo)):
            if isinstance(result, str):
                problems.append(result)
            else:
                configs[pair] = result
    if problems:
        raise AgentError("cannot run this grid:\n  " + "\n  ".join(problems))
    return configs
