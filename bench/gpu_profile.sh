#!/usr/bin/env bash
# gpu_profile.sh - Nsight Compute on one kernel (decode attention unless
# KERNEL names another: encode, prefill, reduce) of one benchmark shape
# (bench_cuda --shape), for the RESULTS.md profile notes.
# On the device, after bench/gpu.sh --build here:
#   [KERNEL=decode] bash bench/gpu_profile.sh [B CONTEXT]
#   (writes $OUT/profile_KERNEL_B_CTX.txt)
set -u
cd "$(dirname "$0")/.."
B=${1:-8}
CTX=${2:-16384}
KERNEL=${KERNEL:-decode}
OUT=${OUT:-/tmp/tqgen-gpu}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/.gpu/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export XDG_CACHE_HOME=/tmp/tqgen-gpu-cache
# The clocks stay as they are (--clock-control none); the kernel's fifth
# launch (after the warm-up launches).
ncu --clock-control none --kernel-name regex:"_${KERNEL}\$" --launch-skip 4 --launch-count 1 \
    --section SpeedOfLight --section Occupancy --section LaunchStats \
    --section WarpStateStats --section SchedulerStats --section InstructionStats \
    --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
    .gpu/bench_cuda --shape "$B" "$CTX" > "$OUT/profile_${KERNEL}_${B}_${CTX}.txt" 2>&1
echo "ncu exit $?"
grep -E "Duration|Throughput|Registers|Achieved Occupancy|Theoretical Occupancy|Issue Slots|Stall|Warp Cycles|Executed Ipc|Block Limit|Shared Memory Config|Dynamic Shared|Static Shared|Waves" \
  "$OUT/profile_${KERNEL}_${B}_${CTX}.txt" | head -60
