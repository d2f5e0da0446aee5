"""Which EGL driver renders MuJoCo: NVIDIA's on a machine with an NVIDIA GPU, else Mesa's.

MuJoCo's EGL backend goes through libglvnd, which loads the EGL vendors named by the JSON files in
its egl_vendor.d folders, or only those in __EGL_VENDOR_LIBRARY_FILENAMES. A container often
has the NVIDIA driver's vendor file outside the default folders (/usr/local/nvidia/...), so the
software renderer (Mesa's llvmpipe) renders although a GPU is there (docs/GPU.md).

`prefer_gpu_rendering(probe)`: when the user has not chosen a vendor, a GPU device node exists and
NVIDIA's vendor file is found, point __EGL_VENDOR_LIBRARY_FILENAMES at it (actors started later
inherit it) and probe a frame; if that fails, restore the environment and probe the default.
`vendor_env(kind)` gives the variable for 'nvidia' or 'mesa' (bench/bench_render.py).
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Dict, MutableMapping, Optional, Sequence

log = logging.getLogger(__name__)
VAR = "__EGL_VENDOR_LIBRARY_FILENAMES"
VENDOR_DIRS = ("/usr/local/nvidia/share/glvnd/egl_vendor.d", "/usr/share/glvnd/egl_vendor.d",
               "/etc/glvnd/egl_vendor.d", "/usr/local/share/glvnd/egl_vendor.d")
VENDOR_FILES = {"nvidia": "10_nvidia.json", "mesa": "50_mesa.json"}
GPU_NODES = ("/dev/nvidia0", "/dev/nvidiactl")


def vendor_file(kind: str, dirs: Sequence[str] = VENDOR_DIRS) -> Optional[str]:
    """The vendor JSON of 'nvidia' or 'mesa' in the first folder that has it, or None."""
    if kind not in VENDOR_FILES:
        raise ValueError(f"EGL vendor must be one of {', '.join(VENDOR_FILES)}; got {kind!r}")
    for d in dirs:
        path = os.path.join(d, VENDOR_FILES[kind])
        if os.path.isfile(path):
            return path
    return None


def vendor_env(kind: str, dirs: Sequence[str] = VENDOR_DIRS) -> Dict[str, str]:
    """{VAR: path} selecting only `kind`'s EGL driver; ValueError naming the fix if absent."""
    path = vendor_file(kind, dirs)
    if path is None:
        raise ValueError(f"no {VENDOR_FILES[kind]} in {', '.join(dirs)}: the {kind} EGL driver "
                         "is not installed here" + (" (libegl-mesa0)" if kind == "mesa" else ""))
    return {VAR: path}


def prefer_gpu_rendering(probe: Callable[[], str], environ: Optional[MutableMapping] = None,
                         dirs: Sequence[str] = VENDOR_DIRS,
                         gpu_nodes: Sequence[str] = GPU_NODES) -> str:
    """Run `probe` (render one frame, return the GL renderer) with NVIDIA's EGL driver when it is
    there and works, else with the default; returns the renderer string (module docstring)."""
    env = os.environ if environ is None else environ
    if env.get("MUJOCO_GL", "egl") != "egl" or VAR in env:
        return probe()  # not EGL, or the user chose the vendor: leave it alone
    nvidia = vendor_file("nvidia", dirs)
    if nvidia is None or not any(os.path.exists(n) for n in gpu_nodes):
        return probe()
    env[VAR] = nvidia
    try:
        renderer = probe()
    except Exception as e:  # noqa: BLE001 - any failure: fall back to the default driver
        del env[VAR]
        log.warning("NVIDIA EGL rendering failed (%s); using the default EGL driver", e)
        return probe()
    log.info("rendering on the GPU: %s=%s", VAR, nvidia)
    return renderer
