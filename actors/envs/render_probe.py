"""Check that a backend can render here, in a CHILD process, and name the fix when it cannot.

envpool/EGL failures can abort the process with no Python exception, so the frame is rendered
in `python -m actors.envs.render_probe BACKEND TASK` under a timeout. The child prints the GL
renderer string (glGetString(GL_RENDERER) in an EGL context) on success, or one tagged line.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

log = logging.getLogger(__name__)
_OK, _ERR = "FPAC_RENDERER:", "FPAC_PROBE_ERROR:"
_PACKAGES = "apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri"
SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swrast", "swr")


class RenderingError(RuntimeError):
    """Rendering does not work here; the message names the fix."""


def probe_rendering(backend: str, task: str, timeout_s: float = 120.0,
                    image_size: int = 32, camera: int = -1) -> str:
    """Render one frame of `task` on `backend` in a child process; return the GL renderer."""
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    env.setdefault("PYOPENGL_PLATFORM", env["MUJOCO_GL"])
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "actors.envs.render_probe", backend, task,
           str(image_size), str(camera)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env,
                              cwd=root)
    except subprocess.TimeoutExpired:
        raise RenderingError(f"rendering {task} on {backend} did not finish in {timeout_s:.0f} s "
                             "(a hung EGL driver?); check `eglinfo` and the packages "
                             f"({_PACKAGES})") from None
    for line in proc.stdout.splitlines():
        if line.startswith(_OK):
            renderer = line[len(_OK):].strip()
            _warn_if_software(renderer)
            return renderer
    raise diagnose(proc.stdout + proc.stderr, proc.returncode, env.get("MUJOCO_GL", ""))


def diagnose(output: str, returncode: int, mujoco_gl: str) -> RenderingError:
    """One clear error, naming the fix, for a failed probe's output."""
    text = output.lower()
    tail = output.strip().splitlines()[-1] if output.strip() else f"exit code {returncode}"
    if f"{_ERR}config".lower() in text:
        return RenderingError(tail.split(_ERR, 1)[-1].removeprefix("config:").strip())
    if mujoco_gl != "egl":
        return RenderingError(f"rendering failed with MUJOCO_GL={mujoco_gl!r}: headless "
                              "rendering here needs MUJOCO_GL=egl (unset it or export "
                              f"MUJOCO_GL=egl); {tail}")
    if "libegl.so" in text or "opengl platform library has not been loaded" in text \
            or "cannot load library" in text:
        return RenderingError(f"libEGL / Mesa missing or not loaded: {_PACKAGES} "
                              f"(envpool also needs libEGL loaded globally first); {tail}")
    if "camera" in text and ("out of range" in text or "does not exist" in text
                             or "invalid" in text):
        return RenderingError(f"bad camera id: {tail}")
    if "egl" in text and ("device" in text or "display" in text or "not_initialized" in text
                          or "eglinitialize" in text):
        return RenderingError(f"no usable EGL device/display: install Mesa's EGL ({_PACKAGES}) or "
                              "the NVIDIA driver's libEGL_nvidia, and check "
                              f"__EGL_VENDOR_LIBRARY_FILENAMES / EGL_DEVICE_ID; {tail}")
    return RenderingError(f"rendering failed (exit code {returncode}): {tail}")


def _warn_if_software(renderer: str) -> None:
    gpu = shutil.which("nvidia-smi") is not None or os.path.exists("/dev/nvidia0")
    if gpu and any(s in renderer.lower() for s in SOFTWARE_RENDERERS):
        log.warning("rendering uses the software renderer %r although a GPU exists: install the "
                    "NVIDIA EGL driver (libEGL_nvidia) for GPU rendering", renderer)


def _gl_renderer() -> str:
    """GL_RENDERER from a fresh EGL context (the same EGL vendor the backends use)."""
    from mujoco.egl import GLContext  # noqa: PLC0415
    from OpenGL import GL  # noqa: PLC0415
    ctx = GLContext(16, 16)
    ctx.make_current()
    try:
        return GL.glGetString(GL.GL_RENDERER).decode()
    finally:
        ctx.free()


def _child(backend: str, task: str, image_size: int, camera: int) -> None:
    from fpac_async.config import ConfigError, EnvConfig, RunConfig, resolve  # noqa: PLC0415
    from actors.envs import make_vec_env  # noqa: PLC0415
    try:
        cfg = resolve(RunConfig(env=EnvConfig(task=task, backend=backend, camera=camera,
                                              image_size=image_size)))
        env = make_vec_env(cfg.env, seed=0, num_envs=1)
    except ConfigError as e:
        print(f"{_ERR}config: {e}", flush=True)
        sys.exit(2)
    batch = env.reset()
    env.close()
    if batch.frames.max() == 0:
        print(f"{_ERR}render: the frame is all black", flush=True)
        sys.exit(3)
    renderer = "numpy (no GL)" if backend == "numpy" else _gl_renderer()
    print(f"{_OK}{renderer}", flush=True)


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
