"""The benchmark's plain loop (bench/plain_sac.py) trains the SAME networks with the same settings
as fpac_async.agent.sac.SAC (so bench_learner's comparison is of the implementation alone): from one
seed and the same batches, both reach the same parameters."""
from __future__ import annotations

import pytest
import torch

from bench.plain_sac import PlainSAC
from fpac_async.config import AgentConfig
from fpac_async.agent.sac import SAC
from test_update_modes import A, H, make_batch, state


@pytest.mark.parametrize("target_encoder", [False, True])
def test_plain_loop_reaches_the_parameters_of_sac(target_encoder: bool) -> None:
    cpu = torch.device("cpu")
    cfg = AgentConfig(hidden_dim=32, num_points=4, conv_channels=8, batch_size=8,
                      target_encoder=target_encoder)
    torch.manual_seed(0)
    sac = SAC(cfg, (6, H, H), A, cpu)
    torch.manual_seed(0)
    plain = PlainSAC(cfg, (6, H, H), A, cpu)
    torch.manual_seed(7)  # the same actor-sample draws for both
    for i in range(4):  # actor and target steps on updates 0 and 2
        sac.update(make_batch(i, cpu))
    torch.manual_seed(7)
    for i in range(4):
        b = make_batch(i, cpu)
        plain.update(b.obs, b.action, b.reward, b.discount, b.next_obs)
    ours, theirs = state(sac), state(plain)
    if target_encoder:
        ours += list(sac.target_encoder.parameters())
        theirs += list(plain.target_encoder.parameters())
    torch.manual_seed(0)
    assert not torch.equal(ours[0], state(SAC(cfg, (6, H, H), A, cpu))[0])  # it trained
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-5, atol=1e-6)
