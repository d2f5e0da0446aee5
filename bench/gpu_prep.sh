#!/usr/bin/env bash
# What a device run of bench/gpu_suite.sh carries, prepared on this (networked) machine, in the
# repository root: .device/sim-cp312.tar.xz (MuJoCo, dm_control, pyzmq for Python 3.12) and
# .gl/*.deb (the EGL/GL loaders, per /work/.library/device/README.md). Both are git-ignored
# (.git/info/exclude) and travel with run(carry=[".device", ".gl"]).
set -euo pipefail
# pack-sim.sh appends to ./.git/info/exclude, which a git worktree (.git is a file) lacks: run it
# in a scratch folder and move its archive here.
scratch=$(mktemp -d) && mkdir -p "$scratch/.git/info"
(cd "$scratch" && bash /work/shared/device/pack-sim.sh)
mkdir -p .device && mv "$scratch/.device/sim-cp312.tar.xz" .device/ && rm -rf "$scratch"
# What pack-sim.sh leaves out but this project imports (msgpack) or dm_control's suite needs
# (lxml), in case the GPU host lacks them: .device/extra-cp312.tar.xz (~4 MB).
extra=$(mktemp -d)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$extra/whl" msgpack lxml
mkdir -p "$extra/site" && for w in "$extra"/whl/*.whl; do unzip -q -o "$w" -d "$extra/site"; done
tar -cJf .device/extra-cp312.tar.xz -C "$extra/site" . && rm -rf "$extra"
exclude=$(git rev-parse --git-path info/exclude)
for d in /.device/ /.gl/; do grep -qx "$d" "$exclude" 2>/dev/null || echo "$d" >> "$exclude"; done
mkdir -p .gl /tmp/amd64/partial
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
apt-get $o update -qq
(cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
du -sh .device .gl
