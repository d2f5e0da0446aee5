"""Published reference scores (studies/reference_scores.json): method -> task -> env steps -> (mean, std)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

REFERENCE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference_scores.json")


@dataclass(frozen=True)
class Reference:
    method: str
    source: str  # the full citation
    scores: dict[str, dict[int, tuple[float, float]]]

    def at(self, task: str, env_steps: int) -> tuple[float, float] | None:
        return self.scores.get(task, {}).get(int(env_steps))


def load_references(path: str = REFERENCE_FILE) -> list[Reference]:
    """The references in file order; ValueError naming the entry when one is malformed."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    sources = data.get("sources", {})
    refs = []
    for method, spec in data.get("methods", {}).items():
        if spec.get("source") not in sources:
            raise ValueError(f"{path}: {method} cites unknown source {spec.get('source')!r}")
        scores: dict[str, dict[int, tuple[float, float]]] = {}
        for task, by_steps in spec.get("scores", {}).items():
            for steps, pair in by_steps.items():
                if not (isinstance(pair, list) and len(pair) == 2):
                    raise ValueError(f"{path}: {method} {task} {steps}: expected [mean, std]")
                scores.setdefault(task, {})[int(steps)] = (float(pair[0]), float(pair[1]))
        refs.append(Reference(method, sources[spec["source"]], scores))
    return refs
