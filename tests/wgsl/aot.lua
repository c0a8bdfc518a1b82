-- A small family for the WebGPU AOT and CLI tests: four variants (two
-- quants, contiguous and paged), both WGSL flavours in the dispatch table
-- and the JS module.
return family {
  name = "wgsl_aot",
  models = {
    model { name = "small", head_dim = 64, q_heads = 4, kv_heads = 2 },
  },
  quant = {
    quant { key_bits = 4, value_bits = 4 },
    quant { key_bits = 3, value_bits = 2, outliers = { count = 8, bits = 16 } },
  },
  dtypes = { "f16" },
  layouts = { "contiguous", paged(16) },
  backends = { wgsl = { subgroups = true } },
}
