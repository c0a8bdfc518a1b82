#!/usr/bin/env bash
# smollm2_quality.sh - the SmolLM2-135M KV-cache quality report: perplexity,
# top-1 agreement with the f32 cache and attention cosine for every variant
# of bench/smollm2_quality.lua and the min-max baselines, in one run of
# examples/smollm2, then a plot of the perplexity increase against bits per
# coordinate.  Needs scripts/setup.sh (model, text, gnuplot).
# usage: bench/smollm2_quality.sh [BUILD_DIR] [TOKENS] [BACKEND]
# writes bench/smollm2_quality.md (the table) and bench/smollm2_quality.png
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
tokens=${2:-4096}
backend=${3:-c}
app=$build/examples/smollm2/smollm2
spec=bench/smollm2_quality.lua
tq=$("$build"/tqgen "$spec" --list | awk '/^d64_/ {print $1}' | paste -sd, -)
kvs="minmax8,minmax4,$tq,k4v4+center,minmax4+center,k4v4+smooth,k3v4+smooth,k4v4_o16b5+smooth,k3v4_o16b4+smooth,minmax4+smooth"
md=bench/smollm2_quality.md
{
  echo "Command: \`bench/smollm2_quality.sh $build $tokens $backend\` ($(date -u +%Y-%m-%d)," \
       "$(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
  echo
  "$app" ppl --backend "$backend" --spec "$spec" --text data/smollm2/genesis.txt \
    --tokens "$tokens" --window 1024 --stats 16 --kv "$kvs"
} | tee "$md"

# Plot: perplexity increase (%) against bits per coordinate, TurboQuant
# variants and min-max baselines as two series (centered and smoothed rows
# left out).
dat=$(mktemp)
awk -F'|' '/^\| / && $2 !~ /cache|f32 *$|center|smooth/ {
  name = $2; gsub(/^ +| +$/, "", name); sub(/ .*/, "", name)
  sub(/^d64_g3_/, "", name); sub(/_f32$/, "", name)
  inc = $6; gsub(/[ +%]/, "", inc)
  print (name ~ /^minmax/ ? 1 : 0), $3 + 0, inc + 0, name }' "$md" > "$dat"
gnuplot <<GP
set terminal pngcairo size 900,560 font ",10" noenhanced
set output "bench/smollm2_quality.png"
set title "SmolLM2-135M, KV cache quantization: perplexity increase over the f32 cache ($tokens tokens of Genesis, KJV)"
set xlabel "bits per coordinate (K and V, everything stored)"
set ylabel "perplexity increase (%)"
set logscale y
set grid
set key top right
plot "$dat" using (\$1 == 0 ? \$2 : 1/0):(\$3 > 0.01 ? \$3 : 0.01) with points pt 7 ps 1.2 title "TurboQuant (tqgen kernels)", \
     "$dat" using (\$1 == 0 ? \$2 : 1/0):(\$3 > 0.01 ? \$3 : 0.01):4 with labels offset 0,0.8 font ",7" notitle, \
     "$dat" using (\$1 == 1 ? \$2 : 1/0):(\$3 > 0.01 ? \$3 : 0.01) with points pt 5 ps 1.2 title "per-token min-max uniform (no rotation)", \
     "$dat" using (\$1 == 1 ? \$2 : 1/0):(\$3 > 0.01 ? \$3 : 0.01):4 with labels offset 0,-0.9 font ",7" notitle
GP
rm -f "$dat"
echo "wrote $md and bench/smollm2_quality.png"
