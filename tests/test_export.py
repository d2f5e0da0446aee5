"""TorchScript policy export: script == eager, cached points, flat weights, standalone reload."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fpac_async.config import AgentConfig
from fpac_async.agent.export import (export_policy, flat_weights, load_flat_weights, policy_module,
                                     script_from_bytes, script_to_bytes)
from fpac_async.agent.sac import SAC

N, A, H, D = 4, 3, 32, 5


def make_sac(seed: int = 0, **kw) -> SAC:
    torch.manual_seed(seed)
    cfg = AgentConfig(hidden_dim=32, num_points=4, conv_channels=8, pixels_feature_dim=16, **kw)
    return SAC(cfg, (6, H, H), A, "cpu", state_dim=D)


def inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 256, (N, 6, H, H), dtype=torch.uint8, generator=g)
    return obs, torch.randn(N, 2, generator=g) * 3, torch.randn(N, D, generator=g)


@pytest.mark.parametrize("encoder", ["fpac", "pixels", "state"])
def test_script_equals_eager(encoder):
    sac = make_sac(encoder=encoder, camera_offset=True)
    eager = policy_module(sac)
    scripted = export_policy(sac)
    obs, cam, state = inputs()
    det = scripted(obs, True, cam, state)
    torch.testing.assert_close(det, eager(obs, True, cam, state), rtol=0, atol=0)
    torch.testing.assert_close(det, sac.act(obs, True, cam, state), rtol=0, atol=0)
    torch.manual_seed(11)
    sto = scripted(obs, False, cam, state)
    torch.manual_seed(11)
    torch.testing.assert_close(sto, eager(obs, False, cam, state), rtol=0, atol=0)
    assert sto.shape == (N, A) and sto.dtype == torch.float32
    assert not torch.equal(sto, det)  # the stochastic path really samples


@pytest.mark.parametrize("relative", [True, False])
def test_act_from_cached_points_equals_forward(relative):
    # points() are absolute (what actors cache); state_from_points centres x_t when relative.
    scripted = export_policy(make_sac(camera_offset=True, relative=relative))
    obs, cam, _ = inputs()
    x_prev = scripted.points(obs[:, :3].contiguous())  # cached from the previous step
    x_t = scripted.points(obs[:, 3:].contiguous())
    assert x_t.shape == (N, 4, 3)
    torch.testing.assert_close(scripted.act_from_points(x_t, x_prev, True, cam),
                               scripted(obs, True, cam, None), rtol=1e-6, atol=1e-6)


def test_pixels_policy_runs_the_actors_own_head():
    # SAC from pixels: the exported policy is convs -> the ACTOR's Linear+LayerNorm+tanh -> MLP;
    # the critic's head plays no part in acting.
    sac = make_sac(encoder="pixels")
    obs, _, _ = inputs()
    before = export_policy(sac)(obs, True, None, None)
    with torch.no_grad():
        sac.critic.head[0].weight.mul_(3.0)
    torch.testing.assert_close(export_policy(sac)(obs, True, None, None), before, rtol=0, atol=0)
    with torch.no_grad():
        sac.actor.head[0].weight.mul_(3.0)
    assert not torch.allclose(export_policy(sac)(obs, True, None, None), before)
    names = [name for name, _ in flat_weights(policy_module(sac))[1]]
    assert any(n.startswith("actor.head.") for n in names)
    assert not any("critic" in n for n in names)


def test_points_raise_for_encoders_without_points():
    scripted = export_policy(make_sac(encoder="pixels"))
    obs, _, _ = inputs()
    with pytest.raises((RuntimeError, torch.jit.Error), match="fpac encoder"):
        scripted.points(obs[:, :3].contiguous())


def test_flat_weights_round_trip_into_fresh_module():
    source = export_policy(make_sac(seed=0))
    target = script_from_bytes(script_to_bytes(export_policy(make_sac(seed=1))))
    obs, cam, _ = inputs()
    assert not torch.equal(source(obs, True, cam, None), target(obs, True, cam, None))
    flat, layout = flat_weights(source)
    assert flat.dtype == np.float32 and flat.ndim == 1
    assert flat.size == sum(p.numel() for p in source.parameters())
    # Over the wire the layout arrives as lists (msgpack); that is accepted.
    load_flat_weights(target, flat.copy(), [[name, list(shape)] for name, shape in layout])
    torch.testing.assert_close(target(obs, True, cam, None), source(obs, True, cam, None),
                               rtol=0, atol=0)


def test_mismatched_layout_rejected():
    module = export_policy(make_sac())
    flat, layout = flat_weights(module)
    name, shape = layout[0]
    with pytest.raises(ValueError, match="does not match"):
        load_flat_weights(module, flat, [("bogus", shape)] + layout[1:])
    with pytest.raises(ValueError, match="does not match"):
        load_flat_weights(module, flat, [(name, shape + (1,))] + layout[1:])
    with pytest.raises(ValueError, match="tensors"):
        load_flat_weights(module, flat, layout[:-1])
    with pytest.raises(ValueError, match="numbers"):
        load_flat_weights(module, flat[:-1], layout)
    with pytest.raises(ValueError, match="float32"):
        load_flat_weights(module, flat.astype(np.float64), layout)
    other = export_policy(make_sac(encoder="pixels"))
    with pytest.raises(ValueError):
        load_flat_weights(other, flat, layout)


@pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated:DeprecationWarning")
def test_saved_policy_runs_in_a_process_without_the_project(tmp_path):
    scripted = export_policy(make_sac(camera_offset=True))
    obs, cam, _ = inputs()
    path = str(tmp_path / "policy.pt")
    torch.jit.save(scripted, path)
    torch.save({"obs": obs, "cam": cam}, str(tmp_path / "in.pt"))
    code = (
        "import sys, torch\n"
        # Same thread count as this process: other tests may have changed it, and the float
        # reduction order (hence the last bits) depends on it.
        f"torch.set_num_threads({torch.get_num_threads()})\n"
        f"m = torch.jit.load({path!r})\n"
        f"x = torch.load({str(tmp_path / 'in.pt')!r}, weights_only=True)\n"
        "a = m(x['obs'], True, x['cam'], None)\n"
        "assert not any(k.startswith('fpac_async') for k in sys.modules)\n"
        f"torch.save(a, {str(tmp_path / 'out.pt')!r})\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = ""
    done = subprocess.run([sys.executable, "-c", code], cwd="/tmp", env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    action = torch.load(str(tmp_path / "out.pt"), weights_only=True)
    torch.testing.assert_close(action, scripted(obs, True, cam, None), rtol=0, atol=0)


def test_a_wrong_dtype_is_named_by_the_exported_policy():
    """Issue 20: TorchScript's str(dtype) is a number: the error read 'got 6' for float32."""
    scripted = export_policy(make_sac())
    obs = inputs()[0].to(torch.float32)
    with pytest.raises((TypeError, RuntimeError, torch.jit.Error), match="got float32"):
        scripted(obs, True, None, None)
