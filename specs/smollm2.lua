-- SmolLM2-135M.  Shape from its config.json on the Hugging Face hub
-- (HuggingFaceTB/SmolLM2-135M): hidden_size 576 / num_attention_heads 9
-- gives head_dim 64; num_key_value_heads 3 (group 3).  Small enough to run
-- end to end on a CPU, so it also carries the f32 variants.
return family {
  name = "smollm2",
  models = {
    model { name = "SmolLM2-135M", head_dim = 64, q_heads = 9, kv_heads = 3 },
  },
  quant = {
    quant { key_bits = 4, value_bits = 4 },
    quant { key_bits = 3, value_bits = 4 },
    -- 16 of 64 channels coded apart at 4 bits (a quarter, as with 32 of 128).
    quant { key_bits = 3, value_bits = 3, outliers = { count = 16, bits = 4 } },
    quant { key_bits = 2, value_bits = 2, qjl = true },
  },
  dtypes = { "f32", "f16" },
  layouts = { "contiguous", paged(16) },
  backends = {
    c = { cflags = "-O2" },
    cuda = { archs = { "sm_80", "sm_89", "sm_90" } },
    vulkan = { subgroups = true },
    wgsl = { subgroups = true },
  },
}
