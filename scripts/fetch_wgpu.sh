#!/usr/bin/env bash
# fetch_wgpu.sh BUILD_DIR - wgpu-native for the WebGPU backend: the pinned
# `wgpu` Python wheel (which ships libwgpu_native and its webgpu.h/wgpu.h) is
# fetched with pip once, checked against its SHA-256, and its library and
# headers unpacked into BUILD_DIR/wgpu/{lib,include}, where CMake finds them
# (TQ_WGPU_DIR).  Nothing else downloads anything.
set -euo pipefail
version=0.32.0
wheel=wgpu-$version-py3-none-manylinux_2_28_x86_64.whl
sha256=6499a31b5a29a10b4f1089fea4a0806411f42605fa86b6c0b543a07ca0de8568
dest=${1:?usage: scripts/fetch_wgpu.sh BUILD_DIR}/wgpu
if [ "$(uname -m)" != x86_64 ]; then
  echo "fetch_wgpu: the pinned wheel is for x86_64 only; the wgsl backend stays off" >&2
  exit 0
fi
if [ -f "$dest/stamp" ] && [ "$(cat "$dest/stamp")" = "$sha256" ]; then
  exit 0
fi
cache=${XDG_CACHE_HOME:-$HOME/.cache}/tqgen-setup
mkdir -p "$cache"
if ! echo "$sha256  $cache/$wheel" | sha256sum -c --status 2> /dev/null; then
  echo "fetch_wgpu: downloading wgpu==$version (wgpu-native inside)"
  python3 -m pip download -q --no-deps --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation py \
    -d "$cache" "wgpu==$version"
  echo "$sha256  $cache/$wheel" | sha256sum -c --quiet
fi
rm -rf "$dest"
mkdir -p "$dest/lib" "$dest/include"
unzip -q -o -j "$cache/$wheel" wgpu/resources/libwgpu_native-release.so -d "$dest/lib"
mv "$dest/lib/libwgpu_native-release.so" "$dest/lib/libwgpu_native.so"
unzip -q -o -j "$cache/$wheel" wgpu/resources/webgpu.h wgpu/resources/wgpu.h \
  'wgpu-*.dist-info/licenses/LICENSE' -d "$dest/include"
echo "$sha256" > "$dest/stamp"
echo "fetch_wgpu: wgpu-native from wgpu $version in $dest"
