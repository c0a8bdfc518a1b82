#!/usr/bin/env bash
# gpu.sh - the whole GPU check in one call: verify every CUDA variant of every
# shipped spec against the CPU reference, memcheck a conformance run, then
# benchmark against PyTorch SDPA and the device copy rate, all in one run.
#
# Here (no GPU):  bench/gpu.sh --build     builds .gpu/ (tqgen, bench_cuda, libs)
# On the device:  bench/gpu.sh             writes results under $OUT
set -u
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--build" ]; then
  set -e
  cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DTQ_LIBCLANG=OFF \
        -DBUILD_TESTING=OFF > /dev/null
  cmake --build build-gpu -j "$(nproc)" --target tqgen bench_cuda > /dev/null
  rm -rf .gpu && mkdir -p .gpu/lib
  cp build-gpu/tqgen build-gpu/bench_cuda .gpu/
  # The AOT path: a dispatch table with nvcc fatbins, linked into a checker.
  build-gpu/tqgen bench/aot_check.lua -o build-gpu/aot_check --aot 2> /dev/null
  cc -std=c11 -O2 -Iruntime -Igen/core -Ibuild-gpu/aot_check bench/aot_check.c \
     build-gpu/aot_check/aot_check_dispatch.c build-gpu/libtq.a build-gpu/libtqemit.a \
     build-gpu/libtqcore.a -lxxhash -ldl -lm -lpthread -o .gpu/aot_check
  for lib in liblua5.4.so.0 libcjson.so.1 libxxhash.so.0; do
    cp -L "/usr/lib/x86_64-linux-gnu/$lib" .gpu/lib/
  done
  echo "built .gpu/: carry it to the device (carry: [\".gpu\"])"
  exit 0
fi
OUT=${OUT:-/tmp/tqgen-gpu}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/.gpu/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export XDG_CACHE_HOME=/tmp/tqgen-gpu-cache
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/gpu.txt"
status=0
for s in smollm2 llama3 qwen3; do
  timeout 150 stdbuf -oL .gpu/tqgen "specs/$s.lua" --verify --backend cuda > "$OUT/verify_$s.txt" 2>&1 || status=1
  echo "verify $s: $(tail -n 1 "$OUT/verify_$s.txt")"
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
exit $status
