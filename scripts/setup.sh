#!/usr/bin/env bash
# setup.sh - everything a fresh Debian 12 machine needs, then the main job:
# installs missing packages, configures and builds into build/, and runs
#   build/tqgen specs/qwen3.lua -o out/qwen3
# Usage: scripts/setup.sh [BUILD_DIR] [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true

packages=(build-essential cmake pkg-config liblua5.4-dev libcjson-dev
          libxxhash-dev libclang-dev)
# vulkan backend: glslang + SPIRV-Tools (in-process SPIR-V), volk + headers;
# lavapipe, the CPU Vulkan driver the Vulkan and WGSL tests run on
packages+=(glslang-dev spirv-tools libvulkan-dev libvulkan-volk-dev mesa-vulkan-drivers)
packages+=(unzip) # wgsl backend: unpacks the pinned wgpu wheel
packages+=(python3 python3-pip bible-kjv gnuplot-nox) # examples/smollm2: data, report
command -v node > /dev/null || packages+=(nodejs) # checks the generated JS module
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

scripts/smollm2_data.sh # model and text of examples/smollm2, into data/
scripts/fetch_wgpu.sh "$build" # wgpu-native (pinned wheel) into $build/wgpu
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
cmake --build "$build" -j "$(nproc)"
"$build"/tqgen specs/qwen3.lua -o out/qwen3
