#!/usr/bin/env bash
# gpu_profile.sh - Nsight Compute on one kernel (decode attention unless
# KERNEL names another: encode, prefill, reduce) of one benchmark shape
# (bench_cuda --shape), for the RESULTS.md profile notes.
# On the device, after bench/gpu.sh --build here:
#   [KERNEL=decode] [STALLS=1] bash bench/gpu_profile.sh [B CONTEXT]
#   (writes $OUT/profile_KERNEL_B_CTX.txt; STALLS=1 also ranks the SASS
#   lines by stall samples, bench/ncu_stalls.py)
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
pick=(--clock-control none --kernel-name regex:"_${KERNEL}\$" --launch-skip 4 --launch-count 1)
ncu "${pick[@]}" \
    --section SpeedOfLight --section Occupancy --section LaunchStats \
    --section WarpStateStats --section SchedulerStats --section InstructionStats \
    --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
    .gpu/bench_cuda --shape "$B" "$CTX" > "$OUT/profile_${KERNEL}_${B}_${CTX}.txt" 2>&1
echo "ncu exit $?"
if [ "${STALLS:-0}" = 1 ]; then
  # Stall samples by SASS line (bench/ncu_stalls.py): a second profile with
  # the source counters, written as $OUT/stalls_KERNEL_B_CTX.csv.
  rep="$OUT/stalls_${KERNEL}_${B}_${CTX}"
  ncu "${pick[@]}" --section SourceCounters --import-source no -o "$rep" -f \
      .gpu/bench_cuda --shape "$B" "$CTX" > /dev/null 2>&1
  ncu --import "$rep.ncu-rep" --page source --csv --print-source sass > "$rep.csv" 2> /dev/null
  rm -f "$rep.ncu-rep"
  python3 bench/ncu_stalls.py "$rep.csv" 30
fi
grep -E "Duration|Throughput|Registers|Achieved Occupancy|Theoretical Occupancy|Issue Slots|Stall|Warp Cycles|Executed Ipc|Block Limit|Shared Memory Config|Dynamic Shared|Static Shared|Waves" \
  "$OUT/profile_${KERNEL}_${B}_${CTX}.txt" | head -60
