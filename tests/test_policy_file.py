"""policy.pt as users load it: `policy = torch.jit.load("policy.pt"); action = policy(obs)` on a
uint8 observation, deterministic by default, in a fresh interpreter with nothing but torch."""
from __future__ import annotations

import os
import subprocess
import sys

import torch

from fpac_async.config import AgentConfig
from fpac_async.agent.export import export_policy
from fpac_async.agent.sac import SAC

SNIPPET = """
import sys, torch
policy = torch.jit.load(sys.argv[1], map_location="cpu")
obs = torch.randint(0, 256, (3, 6, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
a, b = policy(obs), policy(obs)
assert a.shape == (3, 2) and a.dtype == torch.float32, a
assert torch.equal(a, b), "policy(obs) must be deterministic"
assert torch.equal(a, policy(obs, True))
torch.manual_seed(1)
noisy = policy(obs, False)
assert not torch.equal(a, noisy), "deterministic=False samples"
print("OK", a.abs().max().item())
"""


def test_saved_policy_is_deterministic_by_default_in_a_fresh_process(tmp_path) -> None:
    torch.manual_seed(0)
    sac = SAC(AgentConfig(num_points=4, conv_channels=8, hidden_dim=32), (6, 32, 32), 2)
    path = str(tmp_path / "policy.pt")
    torch.jit.save(export_policy(sac), path)
    run = subprocess.run([sys.executable, "-c", SNIPPET, path], cwd="/", capture_output=True,
                         text=True, timeout=120, check=False,
                         env={**os.environ, "PYTHONPATH": ""})
    assert run.returncode == 0 and "OK" in run.stdout, run.stderr[-2000:]
