"""Joins bench_cuda and sdpa_baseline rows (files given as arguments) into
the ratio table recorded in bench/RESULTS.md."""
import sys

rows = []
for path in sys.argv[1:]:
    with open(path) as f:
        rows += [line.rstrip("\n").split("\t") for line in f if "\t" in line]


def kv(r):
    return {r[i]: r[i + 1] for i in range(1, len(r) - 1, 2)}


ours = {(kv(r)["B"], kv(r)["ctx"]): kv(r) for r in rows if r[0] == "decode"}
base = {(kv(r)["B"], kv(r)["ctx"]): kv(r) for r in rows if r[0] == "sdpa_decode"}
copy = next((kv(r)["GBps"] for r in rows if r[0] == "copy"), "?")
print(f"device copy (read + write): {copy} GB/s")
print("| B | context | tqgen ms | SDPA f16 ms | speedup | packed GB/s | % of copy |")
print("|---|---|---|---|---|---|---|")
for key in sorted(ours, key=lambda k: (int(k[0]), int(k[1]))):
    o, b = ours[key], base.get(key)
    sp = f"{float(b['ms']) / float(o['ms']):.2f}x" if b else "-"
    print(f"| {key[0]} | {int(key[1]) // 1024}K | {float(o['ms']):.4f} | "
          f"{b['ms'] if b else '-'} | {sp} | {o['GBps']} | {o['pct_copy']}% |")
for r in rows:
    if r[0] in ("encode", "prefill", "sdpa_prefill", "jit", "verify_long"):
        print("\t".join(r))
pre = next((kv(r) for r in rows if r[0] == "prefill"), None)
spre = next((kv(r) for r in rows if r[0] == "sdpa_prefill"), None)
if pre and spre:
    print(f"prefill 4K: tqgen {pre['ms']} ms, SDPA {spre['ms']} ms, "
          f"ratio {float(pre['ms']) / float(spre['ms']):.2f}x of SDPA time")
