-- Variants for bench/aot_check.c: the CUDA AOT path on the GPU (a fatbin in
-- the dispatch table, no NVRTC).  One plain and one with every option kind.
return family {
  name = "aot_check",
  models = { model { name = "q32-kv8", head_dim = 128, q_heads = 32, kv_heads = 8 } },
  quant = {
    quant { key_bits = 4, value_bits = 4 },
    quant { key_bits = 3, value_bits = 3, outliers = { count = 32, bits = 4 }, qjl = true },
  },
  dtypes = { "f16" },
  layouts = { "contiguous", paged(16) },
  backends = { cuda = { archs = { "sm_90" } } },
}
