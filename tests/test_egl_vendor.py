"""EGL vendor choice (actors/envs/egl_vendor.py): NVIDIA's driver where a GPU and its vendor file
exist and it renders, the default otherwise; a vendor the user chose is left alone."""
from __future__ import annotations

import os

import pytest

from actors.envs.egl_vendor import VAR, prefer_gpu_rendering, vendor_env


@pytest.fixture
def machine(tmp_path):
    """A fake machine: vendor folder with NVIDIA's and Mesa's files, and a GPU device node."""
    vendors = tmp_path / "egl_vendor.d"
    vendors.mkdir()
    (vendors / "10_nvidia.json").write_text("{}")
    (vendors / "50_mesa.json").write_text("{}")
    node = tmp_path / "nvidia0"
    node.write_text("")
    return {"dirs": [str(vendors)], "gpu_nodes": [str(node)]}


def probe_seeing(env: dict, nvidia_works: bool = True):
    """A probe that records the vendor file of each call; with nvidia_works=False any probe with
    a vendor file set fails (the GPU's EGL does not initialise), only the default renders."""
    calls = []

    def probe() -> str:
        calls.append(env.get(VAR))
        if env.get(VAR) is not None and not nvidia_works:
            raise RuntimeError("eglInitialize failed")
        if env.get(VAR, "").endswith("10_nvidia.json"):
            return "NVIDIA H200/PCIe/SSE2"
        return "llvmpipe (LLVM 15.0.7, 256 bits)"
    return probe, calls


def test_gpu_machine_renders_with_nvidia_and_children_inherit_it(machine) -> None:
    env = {"MUJOCO_GL": "egl"}
    probe, calls = probe_seeing(env)
    assert prefer_gpu_rendering(probe, env, **machine) == "NVIDIA H200/PCIe/SSE2"
    assert env[VAR] == os.path.join(machine["dirs"][0], "10_nvidia.json")
    assert calls == [env[VAR]]  # one probe, with NVIDIA's file


def test_failing_nvidia_falls_back_to_the_default_driver(machine) -> None:
    env = {"MUJOCO_GL": "egl"}
    probe, calls = probe_seeing(env, nvidia_works=False)
    assert prefer_gpu_rendering(probe, env, **machine).startswith("llvmpipe")
    nvidia = os.path.join(machine["dirs"][0], "10_nvidia.json")
    assert VAR not in env and calls == [nvidia, None]  # NVIDIA's file first, then the default


def test_no_gpu_node_or_user_choice_leaves_the_environment_alone(machine) -> None:
    env = {"MUJOCO_GL": "egl"}
    probe, calls = probe_seeing(env)
    no_gpu = dict(machine, gpu_nodes=[machine["gpu_nodes"][0] + ".absent"])
    assert prefer_gpu_rendering(probe, env, **no_gpu).startswith("llvmpipe") and VAR not in env
    chosen = {"MUJOCO_GL": "egl", VAR: "/x/50_mesa.json"}
    probe, calls = probe_seeing(chosen)
    prefer_gpu_rendering(probe, chosen, **machine)
    assert chosen[VAR] == "/x/50_mesa.json" and calls == ["/x/50_mesa.json"]


def test_vendor_env_names_the_missing_driver(tmp_path) -> None:
    (tmp_path / "50_mesa.json").write_text("{}")
    assert vendor_env("mesa", [str(tmp_path)]) == {VAR: str(tmp_path / "50_mesa.json")}
    with pytest.raises(ValueError, match="10_nvidia.json.*not installed"):
        vendor_env("nvidia", [str(tmp_path)])
    with pytest.raises(ValueError, match="EGL vendor must be one of"):
        vendor_env("amd", [str(tmp_path)])
