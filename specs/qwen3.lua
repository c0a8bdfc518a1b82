-- Qwen3 dense models.  Shapes from each model's config.json on the Hugging
-- Face hub (Qwen/Qwen3-0.6B, Qwen/Qwen3-8B): head_dim, num_attention_heads
-- (q_heads) and num_key_value_heads (kv_heads).
--   Qwen3-0.6B: head_dim 128, 16 q heads, 8 kv heads (group 2)
--   Qwen3-8B:   head_dim 128, 32 q heads, 8 kv heads (group 4)
return family {
  name = "qwen3",
  models = {
    model { name = "Qwen3-0.6B", head_dim = 128, q_heads = 16, kv_heads = 8 },
    model { name = "Qwen3-8B", head_dim = 128, q_heads = 32, kv_heads = 8 },
  },
  quant = {
    quant { key_bits = 4, value_bits = 4 },
    quant { key_bits = 3, value_bits = 4 },
    -- 32 of 128 channels coded apart at 4 bits: the paper's 3.5-bit mix.
    quant { key_bits = 3, value_bits = 3, outliers = { count = 32, bits = 4 } },
    quant { key_bits = 2, value_bits = 2, qjl = true },
    quant { key_bits = 4, value_bits = 4, value_method = "minmax", value_group = 32 },
  },
  dtypes = { "f16", "bf16" },
  layouts = { "contiguous", paged(16) },
  backends = {
    c = { cflags = "-O2" },
    cuda = { archs = { "sm_80", "sm_89", "sm_90" } },
    vulkan = { subgroups = true },
    wgsl = { subgroups = true },
  },
}
