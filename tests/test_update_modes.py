"""The update modes give the eager update: torch.compile (inductor) and the static-buffer path
that CUDA graphs replay, on the same seed and batches, to a tight tolerance; CUDA-only checks of
the captured graphs run where there is a GPU (bench/gpu_suite.sh)."""
from __future__ import annotations

from typing import Dict, List

import pytest
import torch
from torch import Tensor

from fpac_async.agent.batch import Batch
from fpac_async.config import AgentConfig
from fpac_async.agent.sac import SAC
from fpac_async.agent.update_modes import GraphedStep, make_update_runner

B, A, H = 8, 2, 32


def tiny_cfg(**kw) -> AgentConfig:
    base = dict(hidden_dim=32, num_points=4, conv_channels=8, batch_size=B)
    base.update(kw)
    return AgentConfig(**base)


def make_batch(seed: int, device: torch.device, cam: bool = False) -> Batch:
    """Stacks cut from one frame sequence (next_obs[:, :3] == obs[:, 3:], the replay's rule)."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (B, 3, 3, H, H), dtype=torch.uint8, generator=g)
    cams = (torch.randn(B, 2, generator=g), torch.randn(B, 2, generator=g)) if cam \
        else (None, None)
    return Batch(obs=torch.cat([frames[:, 0], frames[:, 1]], 1),
                 action=torch.rand(B, A, generator=g) * 2 - 1, reward=torch.rand(B, generator=g),
                 discount=(torch.rand(B, generator=g) > 0.2).float(),
                 next_obs=torch.cat([frames[:, 1], frames[:, 2]], 1), cam=cams[0],
                 next_cam=cams[1]).to(device)


def train(mode: str, updates: int, device: torch.device, cam: bool = False,
          **cfg) -> tuple[SAC, List[Dict]]:
    torch.manual_seed(0)
    sac = SAC(tiny_cfg(camera_offset=cam, **cfg), (6, H, H), A, device, compile_mode=mode)
    torch.manual_seed(7)  # the same random draws (actor samples) in every mode
    metrics = [sac.update(make_batch(i, device, cam)) for i in range(updates)]
    return sac, [{k: float(v) for k, v in m.items()} for m in metrics]


def state(sac: SAC) -> List[Tensor]:
    mods = (sac.encoder, sac.actor, sac.critic, sac.critic_target)
    return [p.detach().cpu() for m in mods for p in m.parameters()] + [sac.log_alpha.cpu()]


def test_compiled_update_equals_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    # Inductor's own RNG would draw other numbers than eager: use eager's (fallback_random).
    import torch._inductor.config as inductor_config
    monkeypatch.setattr(inductor_config, "fallback_random", True)
    torch._dynamo.reset()
    # One branch pattern (actor and target steps every update): one compile, ~40 s on 2 cores.
    cfg = dict(actor_update_every=1, target_update_every=1)
    eager, m_eager = train("none", 3, torch.device("cpu"), **cfg)
    compiled, m_compiled = train("compile", 3, torch.device("cpu"), **cfg)
    for e, c in zip(state(eager), state(compiled)):
        torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-5)
    initial = state(train("none", 0, torch.device("cpu"))[0])
    assert not torch.equal(initial[0], state(eager)[0])  # the updates moved the encoder
    for me, mc in zip(m_eager, m_compiled):
        assert me.keys() == mc.keys()
        for k in me:
            assert mc[k] == pytest.approx(me[k], rel=1e-5, abs=1e-6), k


def test_static_buffer_path_equals_eager_exactly() -> None:
    """compile_mode='cudagraphs' on the CPU: batches copied into static buffers, the step run on
    them, metrics packed and unpacked: bit-identical to eager over alternating branch patterns."""
    cpu = torch.device("cpu")
    eager, m_eager = train("none", 5, cpu)  # default config: actor/target every 2nd update
    graphed, m_graphed = train("cudagraphs", 5, cpu)
    assert isinstance(graphed._run, GraphedStep) and not graphed._run.capture
    for e, g in zip(state(eager), state(graphed)):
        assert torch.equal(e, g)
    assert m_eager == m_graphed
    assert "actor_loss" in m_graphed[0] and "actor_loss" not in m_graphed[1]


def test_static_buffers_follow_the_batch_shape() -> None:
    seen: List[Batch] = []

    def step(batch: Batch, actor_step: bool, target_step: bool) -> Dict[str, Tensor]:
        seen.append(batch)
        return {"r": batch.reward.sum()}

    run = GraphedStep(step, torch.device("cpu"))
    b1, b2 = make_batch(1, torch.device("cpu")), make_batch(2, torch.device("cpu"))
    assert float(run(b1, True, True)["r"]) == pytest.approx(float(b1.reward.sum()))
    assert float(run(b2, True, True)["r"]) == pytest.approx(float(b2.reward.sum()))
    assert seen[0] is seen[1]  # the same static buffers, refilled
    small = Batch(**{k: v[:4] for k, v in vars(b1).items() if v is not None})
    assert float(run(small, True, True)["r"]) == pytest.approx(float(small.reward.sum()))
    assert seen[2].obs.shape[0] == 4  # new buffers for the new shape


def test_bad_compile_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="compile mode must be one of"):
        make_update_runner(lambda b, a, t: {}, "jit", "cpu")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        GraphedStep(lambda b, a, t: {}, torch.device("cpu"), capture=True)


# ------------------------------------------------------------------------- CUDA only
def test_cuda_graphs_update_matches_eager(cuda_device: torch.device,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Captured and replayed whole updates give eager's parameters, with the camera offset on (no
    host-to-device copy may hide in the step). The actor's noise is zero here, so the check does
    not rest on graph-safe philox drawing eager's numbers."""
    monkeypatch.setattr(torch, "randn_like", lambda t, **kw: torch.zeros_like(t))
    eager, m_eager = train("none", 8, cuda_device, cam=True)
    graphed, m_graphed = train("cudagraphs", 8, cuda_device, cam=True)
    assert set(graphed._run._graphs) == {(True, True), (False, False)}, "not captured"
    for e, g in zip(state(eager), state(graphed)):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
    for me, mg in zip(m_eager, m_graphed):
        assert me.keys() == mg.keys()
        for k in me:
            assert mg[k] == pytest.approx(me[k], rel=1e-5, abs=1e-6), k


def test_cuda_graphs_metrics_are_fresh_per_update(cuda_device: torch.device) -> None:
    """Each replay's metrics are its own (a clone of the static output), with real noise."""
    _, metrics = train("cudagraphs", 10, cuda_device)
    losses = [m["critic_loss"] for m in metrics[4:]]  # the replayed updates
    assert len(set(losses)) == len(losses) and all(torch.isfinite(torch.tensor(losses)))


def test_cuda_graphs_see_a_new_learning_rate(cuda_device: torch.device) -> None:
    """SAC.set_lr after capture reaches the replayed Adam steps (the lr is a device tensor)."""
    sac, _ = train("cudagraphs", 6, cuda_device)
    before = [p.detach().clone() for p in sac.critic.parameters()]
    sac.set_lr(0.0)
    for i in range(2):
        sac.update(make_batch(100 + i, cuda_device))
    for b, p in zip(before, sac.critic.parameters()):
        assert torch.equal(b, p.detach())
