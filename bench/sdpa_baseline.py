"""PyTorch scaled_dot_product_attention on an unquantized f16 cache: the
baseline of bench_cuda, same shapes (32 q heads, 8 kv heads, head_dim 128,
distinct K and V), best of the cuDNN and flash backends, median of 50
event-timed runs.  Prints tab-separated rows for gpu_report.py.
`--prefill` times the prefill only (beside `bench_cuda --prefill`)."""
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

HQ, HKV, D = 32, 8, 128
dev = "cuda"


def median_ms(fn, runs=50):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def best(q, k, v, causal):
    out = None
    for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION):
        try:
            with sdpa_kernel(backend):
                ms = median_ms(lambda: F.scaled_dot_product_attention(
                    q, k, v, is_causal=causal, enable_gqa=True))
            out = ms if out is None else min(out, ms)
        except RuntimeError:
            pass
    return out


torch.manual_seed(0)
for B in () if "--prefill" in sys.argv[1:] else (1, 8, 32):
    for ctx in (4096, 16384, 32768, 131072):
        q = torch.randn(B, HQ, 1, D, device=dev, dtype=torch.float16)
        k = torch.randn(B, HKV, ctx, D, device=dev, dtype=torch.float16)
        v = torch.randn(B, HKV, ctx, D, device=dev, dtype=torch.float16)
        ms = best(q, k, v, False)
        print(f"sdpa_decode\tB\t{B}\tctx\t{ctx}\tms\t{ms:.4f}", flush=True)
        del q, k, v
        torch.cuda.empty_cache()
T = 4096
q = torch.randn(1, HQ, T, D, device=dev, dtype=torch.float16)
k = torch.randn(1, HKV, T, D, device=dev, dtype=torch.float16)
v = torch.randn(1, HKV, T, D, device=dev, dtype=torch.float16)
print(f"sdpa_prefill\ttokens\t{T}\tms\t{best(q, k, v, True):.4f}", flush=True)
