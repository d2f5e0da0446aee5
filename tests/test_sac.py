"""SAC learner: hand-checked targets, temperature sign and loss, log-std bound, which parameters
each step moves, Polyak exactness, TD targets from the online or a target encoder, encoder
gradients from the critic only, the pixels actor head, checkpoints, all encoders."""
import copy
import math

import pytest
import torch
from torch import Tensor, nn

from fpac_async.agent.batch import Batch
from fpac_async.config import AgentConfig
from fpac_async.agent.sac import SAC

B, A, H, D = 8, 2, 32, 5


def tiny_cfg(**kw) -> AgentConfig:
    base = dict(hidden_dim=32, num_points=4, conv_channels=8, batch_size=B, pixels_feature_dim=16)
    base.update(kw)
    return AgentConfig(**base)


def make_sac(seed: int = 0, device: str | torch.device = "cpu", **kw) -> SAC:
    torch.manual_seed(seed)
    return SAC(tiny_cfg(**kw), (6, H, H), A, device, state_dim=D)


def make_batch(seed: int = 1, batch: int = B, cam: bool = False,
               device: str | torch.device = "cpu") -> Batch:
    """Stacks cut from one frame sequence, so next_obs[:, :3] == obs[:, 3:] (the replay's rule)."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (batch, 3, 3, H, H), dtype=torch.uint8, generator=g)
    obs = torch.cat([frames[:, 0], frames[:, 1]], 1)
    next_obs = torch.cat([frames[:, 1], frames[:, 2]], 1)
    cams = (torch.randn(batch, 2, generator=g), torch.randn(batch, 2, generator=g)) if cam \
        else (None, None)
    return Batch(obs=obs, action=torch.rand(batch, A, generator=g) * 2 - 1,
                 reward=torch.rand(batch, generator=g),
                 discount=(torch.rand(batch, generator=g) > 0.2).float(), next_obs=next_obs,
                 cam=cams[0], next_cam=cams[1], state=torch.randn(batch, D, generator=g),
                 next_state=torch.randn(batch, D, generator=g)).to(device)


def snapshot(module: nn.Module) -> list:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list, module: nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters()))


class FixedQ(nn.Module):
    """A critic stub returning fixed Q values [2, B] (with a gradient path for the loss)."""

    def __init__(self, values):
        super().__init__()
        self.values = nn.Parameter(torch.tensor(values))

    def forward(self, features: Tensor, action: Tensor) -> Tensor:
        return self.values


def test_critic_target_and_loss_hand_computed(monkeypatch):
    sac = make_sac(encoder="state")
    batch = make_batch(batch=2)
    batch.reward = torch.tensor([0.5, -1.0])
    batch.discount = torch.tensor([1.0, 0.0])
    monkeypatch.setattr(sac.actor, "sample",
                        lambda f: (torch.zeros(2, A), torch.tensor([-0.7, 0.3])))
    sac.critic_target = FixedQ([[2.0, 5.0], [1.5, 4.0]])
    sac.critic = FixedQ([[1.0, 0.0], [3.0, -2.0]])
    f = torch.zeros(2, D)
    loss, metrics = sac.critic_loss(batch, f, f, f)
    # y0 = 0.5 + 0.99 * (min(2.0, 1.5) - 0.1 * (-0.7)) = 0.5 + 0.99 * 1.57 = 2.0543; y1 = r1 = -1.
    assert metrics["target_q"].item() == pytest.approx((2.0543 - 1.0) / 2, abs=1e-6)
    # mean((1 - 2.0543)^2, (0 + 1)^2) + mean((3 - 2.0543)^2, (-2 + 1)^2)
    expected = (1.0543 ** 2 + 1.0) / 2 + (0.9457 ** 2 + 1.0) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert metrics["q"].item() == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("log_prob, direction", [(5.0, +1), (-5.0, -1)])
def test_temperature_moves_toward_target_entropy(monkeypatch, log_prob, direction):
    # target entropy -|A| = -2. log pi = 5 -> entropy -5 < -2: alpha must rise; log pi = -5 ->
    # entropy 5 > -2: alpha must fall.
    sac = make_sac(encoder="state")
    assert sac.target_entropy == -2.0
    real_sample = sac.actor.sample

    def fixed_log_prob(features):
        action, _ = real_sample(features)
        return action, torch.full((features.shape[0],), log_prob)

    monkeypatch.setattr(sac.actor, "sample", fixed_log_prob)
    before = sac.alpha.item()
    assert before == pytest.approx(0.1)
    sac.update(make_batch())
    assert (sac.alpha.item() - before) * direction > 0


def test_temperature_loss_is_on_log_alpha_hand_computed(monkeypatch):
    # The authors' sac.py: alpha_loss = -(log_alpha * (log_pi + target).detach()).mean(), so
    # d/d(log alpha) = mean(-log_pi - target) = mean(H - target), NOT alpha times that.
    # log pi = (1, 2), target -2: H - target = (1, 0), gradient 0.5 (alpha = 0.1 would give 0.05).
    sac = make_sac(encoder="state")
    real_sample = sac.actor.sample

    def fixed_log_prob(features):
        action, _ = real_sample(features)
        return action, torch.tensor([1.0, 2.0])

    monkeypatch.setattr(sac.actor, "sample", fixed_log_prob)
    loss, metrics = sac.actor_alpha_loss(torch.zeros(2, D))
    loss.backward(inputs=[sac.log_alpha])
    assert sac.log_alpha.grad.item() == pytest.approx(0.5, abs=1e-6)
    assert metrics["alpha_loss"].item() == pytest.approx(math.log(0.1) * 0.5, abs=1e-6)


@pytest.mark.parametrize("bound, raw, expected", [
    ("clamp", [5.0, -20.0, 0.5], [2.0, -10.0, 0.5]),  # the authors': clamp to [-10, 2]
    ("tanh", [0.0, 50.0, -50.0], [-4.0, 2.0, -10.0]),  # -10 + 12 * (tanh(u) + 1) / 2
])
def test_log_std_bound(bound, raw, expected):
    sac = make_sac(encoder="state", log_std_bound=bound)
    last = sac.actor.trunk[-1]
    with torch.no_grad():  # outputs = bias: mean (first A), then the raw log-std (next A)
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 0.0, raw[0], raw[1]]))
    _, log_std = sac.actor(torch.zeros(1, D))
    torch.testing.assert_close(log_std, torch.tensor([expected[:2]]), rtol=0, atol=1e-5)
    with torch.no_grad():
        last.bias[A] = raw[2]
    _, log_std = sac.actor(torch.zeros(1, D))
    assert log_std[0, 0].item() == pytest.approx(expected[2], abs=1e-5)
    assert make_sac(encoder="state").actor.tanh_log_std is False  # clamp is the default


@pytest.mark.parametrize("target_encoder", [False, True])
def test_which_parameters_each_update_moves(target_encoder, device):
    sac = make_sac(target_encoder=target_encoder, device=device)  # actor/target every 2nd update
    batch = make_batch(device=device)
    names = ["encoder", "critic", "actor", "critic_target"]
    if target_encoder:
        names.append("target_encoder")
    else:
        assert sac.target_encoder is None  # the authors' TD targets: no target encoder at all
    nets = {n: getattr(sac, n) for n in names}
    before = {n: snapshot(m) for n, m in nets.items()}
    alpha = sac.log_alpha.item()
    metrics = sac.update(batch)  # update 0: critic, actor + alpha, targets
    assert all(changed(before[n], m) for n, m in nets.items())
    assert sac.log_alpha.item() != alpha
    assert all(isinstance(v, Tensor) and v.dim() == 0 for v in metrics.values())
    before = {n: snapshot(m) for n, m in nets.items()}
    alpha = sac.log_alpha.item()
    sac.update(batch)  # update 1: critic (and encoder) only
    assert changed(before["encoder"], sac.encoder) and changed(before["critic"], sac.critic)
    for name in set(names) - {"encoder", "critic"}:
        assert not changed(before[name], nets[name]), name
    assert sac.log_alpha.item() == alpha
    assert sac.num_updates == 2


@pytest.mark.parametrize("encoder", ["fpac", "pixels", "state"])
def test_td_targets_read_the_online_encoder_by_default(encoder, monkeypatch):
    # The authors' fpac.py: q_next = critic_target(encoder(next_obs)) with the ONLINE encoder.
    sac = make_sac(encoder=encoder)
    batch = make_batch(cam=True)
    for _ in range(2):
        sac.update(batch)  # the online encoder moves away from its initial weights
    features, next_features, target_features = sac.encode_pair(batch)
    assert target_features is next_features
    with torch.no_grad():
        online = sac.encoder(batch.next_obs, batch.next_cam, batch.next_state)
    torch.testing.assert_close(target_features, online, rtol=1e-5, atol=1e-6)
    seen = []
    monkeypatch.setattr(sac.critic_target, "forward", lambda f, a: seen.append(f) or
                        torch.zeros(2, f.shape[0]))
    sac.critic_loss(batch, features, next_features, target_features)
    assert seen[0] is next_features

    # target_encoder=True: a Polyak copy computes them, which lags the online encoder.
    sac = make_sac(encoder=encoder, target_encoder=True)
    for _ in range(2):
        sac.update(batch)
    _, next_features, target_features = sac.encode_pair(batch)
    with torch.no_grad():
        lagged = sac.target_encoder(batch.next_obs, batch.next_cam, batch.next_state)
    torch.testing.assert_close(target_features, lagged)
    if encoder != "state":  # the state encoder has no weights: both are the state itself
        assert not torch.allclose(target_features, next_features)


def test_pixels_actor_head_trained_by_the_actor_loss_and_convs_by_the_critic():
    # SAC-AE: convs shared and trained by the critic only; the actor's own Linear+LayerNorm+tanh
    # head on the detached conv output, trained by the actor loss.
    sac = make_sac(encoder="pixels")
    assert isinstance(sac.actor.head[1], nn.LayerNorm) and isinstance(sac.actor.head[2], nn.Tanh)
    assert sac.actor.head[0].in_features == sac.encoder.out_dim == 8 * 9 * 9
    assert sac.critic.head[0].out_features == sac.actor.head[0].out_features == 16
    batch = make_batch()
    features, _, _ = sac.encode_pair(batch)
    loss, _ = sac.actor_alpha_loss(features)
    loss.backward(inputs=list(sac.actor.parameters()) + list(sac.encoder.parameters()))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in sac.actor.head.parameters())
    assert all(p.grad is None for p in sac.encoder.parameters())  # detached conv output
    sac.actor.zero_grad(set_to_none=True)
    loss, _ = sac.critic_loss(batch, *sac.encode_pair(batch))
    loss.backward()
    assert all(p.grad.abs().sum() > 0 for p in sac.encoder.parameters())
    assert all(p.grad.abs().sum() > 0 for p in sac.critic.head.parameters())
    assert all(p.grad is None for p in sac.actor.parameters())  # the TD target is no_grad


@pytest.mark.parametrize("encoder", ["fpac", "pixels"])
def test_encoder_gradient_comes_from_the_critic_only(encoder):
    sac = make_sac(encoder=encoder)
    batch = make_batch()
    features, _, _ = sac.encode_pair(batch)
    loss, _ = sac.actor_alpha_loss(features)
    loss.backward()
    assert all(p.grad is None for p in sac.encoder.parameters())
    assert any(p.grad is not None for p in sac.actor.parameters())

    # In a full actor-step update, the encoder's gradient is exactly the critic loss's.
    sac = make_sac(encoder=encoder)
    twin = copy.deepcopy(sac)
    torch.manual_seed(3)
    sac.update(batch)
    torch.manual_seed(3)
    loss, _ = twin.critic_loss(batch, *twin.encode_pair(batch))
    loss.backward()
    for p, q in zip(sac.encoder.parameters(), twin.encoder.parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)


@pytest.mark.parametrize("target_encoder", [False, True])
def test_target_networks_move_by_tau(target_encoder, device):
    sac = make_sac(tau=0.25, target_encoder=target_encoder, device=device)
    targets = list(sac.critic_target.parameters())
    online = list(sac.critic.parameters())
    if target_encoder:
        targets += list(sac.target_encoder.parameters())
        online += list(sac.encoder.parameters())
    before = [t.detach().clone() for t in targets]
    sac.update(make_batch(device=device))  # a target-update step
    for b, t, o in zip(before, targets, online):
        expected = b + 0.25 * (o.detach() - b)
        torch.testing.assert_close(t, expected, rtol=0, atol=1e-6)
    assert any(not torch.equal(b, t) for b, t in zip(before, targets))


@pytest.mark.parametrize("target_encoder", [False, True])
def test_frame_sharing_matches_plain_encoding(target_encoder, device):
    sac = make_sac(camera_offset=True, target_encoder=target_encoder, device=device)
    assert sac.frame_sharing
    batch = make_batch(cam=True, device=device)
    shared = sac.encode_pair(batch)
    sac.frame_sharing = False
    plain = sac.encode_pair(batch)
    for s, p in zip(shared, plain):
        torch.testing.assert_close(s, p, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("target_encoder", [False, True])
def test_state_dict_round_trip(target_encoder, device):
    sac = make_sac(seed=0, target_encoder=target_encoder, device=device)
    batch = make_batch(device=device)
    for _ in range(3):
        sac.update(batch)
    state = sac.state_dict()
    assert ("target_encoder" in state) == target_encoder
    other = make_sac(seed=7, target_encoder=target_encoder, device=device)
    other.load_state_dict(state)
    assert other.num_updates == 3
    torch.testing.assert_close(other.act(batch.obs, True), sac.act(batch.obs, True), rtol=0, atol=0)
    # Optimiser state and the counter came along: the next update is identical too.
    torch.manual_seed(5)
    m1 = sac.update(batch)
    torch.manual_seed(5)
    m2 = other.update(batch)
    for k in m1:
        torch.testing.assert_close(m1[k], m2[k], rtol=0, atol=0)
    for p, q in zip(sac.critic_target.parameters(), other.critic_target.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_state_dict_across_the_target_encoder_setting():
    batch = make_batch()
    with_target = make_sac(seed=0, target_encoder=True)
    without = make_sac(seed=1)
    for _ in range(3):
        with_target.update(batch)
        without.update(batch)
    # A stored target encoder is ignored by a SAC without one ...
    plain = make_sac(seed=2)
    plain.load_state_dict(with_target.state_dict())
    torch.testing.assert_close(plain.act(batch.obs, True), with_target.act(batch.obs, True))
    # ... and a state without one starts the target encoder from the online encoder.
    lagged = make_sac(seed=2, target_encoder=True)
    lagged.load_state_dict(without.state_dict())
    for p, q in zip(lagged.target_encoder.parameters(), without.encoder.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    with pytest.raises(ValueError, match="missing keys.*critic_target"):
        plain.load_state_dict({k: v for k, v in without.state_dict().items()
                               if k != "critic_target"})


@pytest.mark.parametrize("encoder", ["fpac", "pixels", "state"])
def test_every_encoder_runs_updates(encoder, device):
    sac = make_sac(encoder=encoder, camera_offset=encoder == "fpac", device=device)
    batch = make_batch(cam=True, device=device)
    metrics = sac.update(batch)  # update 0 is an actor step: every metric is there
    assert sac.update(batch).keys() == {"critic_loss", "q", "target_q", "alpha"}
    assert {"critic_loss", "actor_loss", "alpha_loss", "q", "target_q", "alpha", "log_prob",
            "entropy"} <= set(metrics)
    assert all(torch.isfinite(v) for v in metrics.values())
    mean = sac.act(batch.obs, True, batch.cam, batch.state)
    assert mean.shape == (B, A) and torch.equal(mean, sac.act(batch.obs, True, batch.cam, batch.state))
    torch.manual_seed(0)
    assert not torch.equal(mean, sac.act(batch.obs, False, batch.cam, batch.state))  # sampled


def test_set_lr_and_initial_temperature():
    sac = make_sac(init_temperature=0.3, target_entropy=-0.5)
    assert sac.alpha.item() == pytest.approx(0.3) and sac.target_entropy == -0.5
    sac.set_lr(1e-5)
    for opt in (sac.critic_opt, sac.actor_opt, sac.alpha_opt):
        assert all(g["lr"] == 1e-5 for g in opt.param_groups)
    assert math.isclose(make_sac(lr_initial=3e-4, lr_initial_env_steps=10)
                        .critic_opt.param_groups[0]["lr"], 3e-4)


def test_batch_validate_rejects_contract_breaks():
    batch = make_batch(cam=True)
    batch.validate(check_overlap=True)
    bad = copy.copy(batch)
    bad.reward = batch.reward.double()
    with pytest.raises(ValueError, match="reward"):
        bad.validate()
    bad = copy.copy(batch)
    bad.next_cam = None
    with pytest.raises(ValueError, match="cam"):
        bad.validate()
    bad = copy.copy(batch)
    bad.next_obs = torch.flip(batch.next_obs, [0])
    with pytest.raises(ValueError, match="overlap|older frames"):
        bad.validate(check_overlap=True)
    assert batch.to("cpu").obs.data_ptr() == batch.obs.data_ptr()


def test_mlp_init_authors_is_pytorch_default_with_a_small_last_layer() -> None:
    """--mlp-init authors: the authors' utils.MLP (nn.Linear's default U(+-1/sqrt(fan_in)),
    last layer weights and bias U(+-3e-3)), the default; orthogonal with zero biases on request."""
    import math as _math

    from fpac_async.config import AgentConfig as _Cfg
    from fpac_async.agent.sac import SAC as _SAC

    torch.manual_seed(0)
    assert _Cfg().mlp_init == "authors" and _Cfg().hidden_layers == 3  # the authors' MLPs
    authors = _SAC(_Cfg(encoder="state", hidden_dim=64), (6, 8, 8), 2, state_dim=5)
    assert len(authors.actor.trunk) == 2 * 3 + 1  # Linear(in) + 2 x Linear(1024) + output
    last = authors.actor.trunk[-1]
    assert last.weight.abs().max() <= 3e-3 and last.bias.abs().max() <= 3e-3
    assert last.bias.abs().max() > 0  # drawn, not zeroed
    first = authors.actor.trunk[0]
    bound = 1 / _math.sqrt(5)
    assert first.weight.abs().max() <= bound and first.weight.abs().max() > 0.8 * bound
    q_last, q_first = authors.critic.net[-1], authors.critic.net[0]
    assert q_last.weight.abs().max() <= 3e-3 and q_last.bias.abs().max() > 0
    assert q_first.weight.abs().max() <= 1 / _math.sqrt(5 + 2)
    ortho = _SAC(_Cfg(encoder="state", hidden_dim=64, mlp_init="orthogonal"), (6, 8, 8), 2,
                 state_dim=5)
    w = ortho.actor.trunk[0].weight  # [64, 5]: orthonormal columns
    assert torch.allclose(w.t() @ w, torch.eye(5), atol=1e-5)
    assert float(ortho.actor.trunk[-1].bias.abs().max()) == 0.0
