#!/usr/bin/env bash
# gpu.sh - the whole GPU check in one call: verify every CUDA variant of every
# shipped spec against the CPU reference, memcheck a conformance run, then
# benchmark against PyTorch SDPA and the device copy rate, all in one run.
#
# Here (no GPU):  bench/gpu.sh --build     builds .gpu/ (tqgen, bench_cuda, libs)
# On the device:  bench/gpu.sh             writes results under $OUT
set -u
cd "$(dirname "$0")/.."
# The runtime's Vulkan JIT compiles SPIR-V in-process: glslang and
# SPIRV-Tools (static, C++) when this machine has them.
vulkan_libs() {
  local d=/usr/lib/x86_64-linux-gnu l libs=""
  [ -f $d/libglslang.a ] || return 0
  for l in glslang-default-resource-limits glslang SPIRV MachineIndependent OSDependent \
           GenericCodeGen OGLCompiler SPIRV-Tools-opt SPIRV-Tools; do libs="$libs $d/lib$l.a"; done
  echo "-Wl,--start-group$libs -Wl,--end-group -lstdc++"
}
if [ "${1:-}" = "--build" ]; then
  set -e
  scripts/fetch_wgpu.sh build-gpu > /dev/null # wgsl: wgpu-native and its headers
  cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DTQ_LIBCLANG=OFF \
        -DBUILD_TESTING=OFF > /dev/null
  cmake --build build-gpu -j "$(nproc)" --target tqgen bench_cuda bench_backends > /dev/null
  rm -rf .gpu && mkdir -p .gpu/lib
  cp build-gpu/tqgen build-gpu/bench_cuda build-gpu/bench_backends .gpu/
  # The AOT path: a dispatch table with nvcc fatbins, linked into a checker.
  build-gpu/tqgen bench/aot_check.lua -o build-gpu/aot_check --aot 2> /dev/null
  cc -std=c11 -O2 -Iruntime -Igen/core -Ibuild-gpu/aot_check bench/aot_check.c \
     build-gpu/aot_check/aot_check_dispatch.c build-gpu/libtq.a build-gpu/libtqemit.a \
     build-gpu/libtqcore.a $(vulkan_libs) -lxxhash -ldl -lm -lpthread -o .gpu/aot_check
  for lib in liblua5.4.so.0 libcjson.so.1 libxxhash.so.0; do
    cp -L "/usr/lib/x86_64-linux-gnu/$lib" .gpu/lib/
  done
  cp build-gpu/wgpu/lib/libwgpu_native.so .gpu/lib/ # wgsl (dlopened via TQ_WGPU_LIBRARY)
  echo "built .gpu/: carry it to the device (carry: [\".gpu\"])"
  exit 0
fi
OUT=${OUT:-/tmp/tqgen-gpu}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/.gpu/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export XDG_CACHE_HOME=/tmp/tqgen-gpu-cache
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/gpu.txt"
status=0
# The shipped specs, then bench/gpu_shapes.lua: shapes and options they
# leave out (head_dim 32/80/96/256, odd pages, QJL, raw outliers, min-max).
for s in specs/smollm2 specs/llama3 specs/qwen3 bench/gpu_shapes; do
  n=$(basename "$s")
  timeout 240 stdbuf -oL .gpu/tqgen "$s.lua" --verify --backend cuda > "$OUT/verify_$n.txt" 2>&1 || status=1
  echo "verify $n: $(tail -n 1 "$OUT/verify_$n.txt")"
done
grep -h -E "FAIL|ERROR" "$OUT"/verify_*.txt | head -20
if command -v compute-sanitizer > /dev/null; then
  timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 .gpu/tqgen specs/smollm2.lua \
    --verify --backend cuda > "$OUT/memcheck.txt" 2>&1
  echo "memcheck (smollm2, all ops): exit $? ($(grep -c 'Invalid\|ERROR SUMMARY: [1-9]' "$OUT/memcheck.txt") error lines); $(grep 'ERROR SUMMARY' "$OUT/memcheck.txt" | tail -n 1)"
fi
timeout 120 .gpu/aot_check > "$OUT/aot.txt" 2>&1 || status=1
echo "$(tail -n 1 "$OUT/aot.txt")"
timeout 200 stdbuf -oL .gpu/bench_cuda > "$OUT/bench.tsv" 2> "$OUT/bench.err" || { status=1; cat "$OUT/bench.err"; }
timeout 200 python3 -u bench/sdpa_baseline.py > "$OUT/sdpa.tsv" 2> "$OUT/sdpa.err" || { status=1; tail -5 "$OUT/sdpa.err"; }
python3 bench/gpu_report.py "$OUT/bench.tsv" "$OUT/sdpa.tsv" | tee "$OUT/report.md"
# ---- wgsl (begin) ---------------------------------------------------------
# WebGPU: every WGSL variant of every shipped spec, both flavours, through
# wgpu-native on NVIDIA's Vulkan driver, then decode timings of cuda, vulkan
# and wgsl in one run.  Needs the Vulkan loader: carry [".gpu", ".gl"] (.gl
# as /work/.library/device/README.md says).  Everything lands in one file,
# $OUT/wgsl.txt (a run returns at most 8 files).
if ls .gl/*.deb > /dev/null 2>&1; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
nv_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$nv_icd" ] && export VK_DRIVER_FILES="$nv_icd"
export TQ_WGPU_LIBRARY="$PWD/.gpu/lib/libwgpu_native.so"
{
  for fl in core f16sg; do
    for s in specs/smollm2 specs/llama3 specs/qwen3 bench/gpu_shapes; do
      echo "== wgsl verify $s, flavour $fl"
      TQ_WGSL_FLAVOUR=$fl timeout 240 .gpu/tqgen "$s.lua" --verify --backend wgsl 2>&1 \
        | grep -E "FAIL|ERROR|unavailable|verified" | head -20
    done
  done
  if [ -x .gpu/bench_backends ]; then
    # One shape per call: a shape one backend cannot hold (a cache past its
    # largest buffer) ends only that call.  The target: wgsl within 2x of
    # cuda at contexts of 16K and more.
    for shape in "1 4096" "8 16384" "1 131072" "8 32768" "32 32768" "8 131072"; do
      echo "== bench_backends --backends cuda,vulkan,wgsl --shape $shape"
      timeout 120 .gpu/bench_backends --backends cuda,vulkan,wgsl --runs 30 --shape $shape 2>&1
    done
  else
    echo "== bench_backends not built: no WGSL timings in this run"
  fi
} > "$OUT/wgsl.txt" 2>&1 || status=1
grep -E "^==|verified|FAIL|ERROR|unavailable" "$OUT/wgsl.txt" | head -30
grep -q -E "FAIL|ERROR|unavailable" "$OUT/wgsl.txt" && status=1
# ---- wgsl (end) -----------------------------------------------------------
# ---- vulkan (begin) -------------------------------------------------------
# Vulkan on NVIDIA's driver: every Vulkan variant of every shipped spec
# against the CPU reference, then decode timings of cuda and vulkan in one
# run with the f16 SDPA baseline measured above joined in ($OUT/sdpa.tsv).
# The loader comes from .gl (unpacked by the wgsl section above; carry
# [".gpu", ".gl"]).  Everything lands in $OUT/vulkan.txt.  Target: vulkan
# within 1.5x of cuda at contexts >= 16K.
{
  for s in specs/smollm2 specs/llama3 specs/qwen3 bench/gpu_shapes; do
    echo "== vulkan verify $s"
    timeout 240 .gpu/tqgen "$s.lua" --verify --backend vulkan 2>&1 \
      | grep -E "FAIL|ERROR|unavailable|verified" | head -20
  done
  echo "== vulkan verify without subgroups (the fallback), smollm2"
  TQ_VULKAN_SUBGROUPS=0 timeout 120 .gpu/tqgen specs/smollm2.lua --verify --backend vulkan 2>&1 \
    | grep -E "FAIL|ERROR|unavailable|verified" | head -20
  for shape in "1 4096" "1 16384" "1 32768" "1 131072" "8 4096" "8 16384" "8 32768" \
               "8 131072" "32 4096" "32 16384" "32 32768" "32 131072"; do
    echo "== bench_backends --backends cuda,vulkan --shape $shape"
    timeout 120 .gpu/bench_backends --backends cuda,vulkan --runs 30 --shape $shape \
      --baseline "$OUT/sdpa.tsv" 2>&1
  done
} > "$OUT/vulkan.txt" 2>&1 || status=1
grep -E "^==|verified|FAIL|ERROR|unavailable|^[0-9]" "$OUT/vulkan.txt" | head -60
grep -q -E "FAIL|ERROR|unavailable" "$OUT/vulkan.txt" && status=1
# ---- vulkan (end) ---------------------------------------------------------
# ---- vkfast (begin) -------------------------------------------------------
# The Vulkan fast attend stage (templates/vulkan/attend_fast.comp) on
# NVIDIA's driver: the verify table must name it ("fast attend, subgroups of
# 32") for the fast variants and nothing may fail; then decode timings of
# the lead's three shapes with the fast stage and with it off
# (TQ_VULKAN_FAST=0: the attend stage with subgroups), cuda beside both.
# Needs the loader from .gl as above.  Everything lands in $OUT/vkfast.txt.
{
  echo "== vulkan verify qwen3 (paths)"
  timeout 240 .gpu/tqgen specs/qwen3.lua --verify --backend vulkan > "$OUT/vkfast_verify.txt" 2>&1
  grep -E "FAIL|ERROR|unavailable|verified" "$OUT/vkfast_verify.txt" | head -20
  echo "fast attend kernels: $(grep -c 'fast attend, subgroups of 32' "$OUT/vkfast_verify.txt"), fallbacks: $(grep -c 'fallback' "$OUT/vkfast_verify.txt")"
  for shape in "1 4096" "8 16384" "32 131072"; do
    echo "== bench_backends --backends cuda,vulkan --shape $shape (fast)"
    timeout 120 .gpu/bench_backends --backends cuda,vulkan --runs 30 --shape $shape 2>&1 \
      | grep -E "^# backend vulkan|^[0-9]|rror"
    echo "== bench_backends --backends cuda,vulkan --shape $shape (TQ_VULKAN_FAST=0)"
    TQ_VULKAN_FAST=0 timeout 120 .gpu/bench_backends --backends cuda,vulkan --runs 30 --shape $shape 2>&1 \
      | grep -E "^# backend vulkan|^[0-9]|rror"
  done
} > "$OUT/vkfast.txt" 2>&1 || status=1
rm -f "$OUT/vkfast_verify.txt"
cat "$OUT/vkfast.txt"
grep -q -E "FAIL|ERROR|unavailable" "$OUT/vkfast.txt" && status=1
# ---- vkfast (end) ---------------------------------------------------------
exit $status
