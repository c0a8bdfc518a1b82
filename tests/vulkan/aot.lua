-- A small family for the Vulkan AOT test (tests/test_vulkan.c): the
-- dispatch table tqgen writes for it is compiled into the test.  Subgroups
-- are left to the generator, so every entry carries attend with and
-- without subgroup operations.
return family {
  name = "vkaot",
  models = { model { name = "m", head_dim = 64, q_heads = 4, kv_heads = 2 } },
  quant = {
    quant { key_bits = 4, value_bits = 4 },
    quant { key_bits = 3, value_bits = 2, outliers = { count = 16, bits = 16 }, norm_correction = true },
  },
  dtypes = { "f16", "bf16" },
  layouts = { "contiguous", paged(8) },
  backends = { vulkan = { } },
}
