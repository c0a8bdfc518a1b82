-- Llama 3 8B.  Shape from its config.json on the Hugging Face hub
-- (meta-llama/Meta-Llama-3-8B): hidden_size 4096 / num_attention_heads 32
-- gives head_dim 128; num_key_value_heads 8 (group 4).
return family {
  name = "llama3",
  models = {
    model { name = "Llama-3-8B", head_dim = 128, q_heads = 32, kv_heads = 8 },
  },
  quant = {
    quant { key_bits = 4, value_bits = 4 },
    quant { key_bits = 3, value_bits = 4 },
    -- 32 of 128 channels coded apart at 4 bits: the paper's 3.5-bit mix.
    quant { key_bits = 3, value_bits = 3, outliers = { count = 32, bits = 4 } },
    quant { key_bits = 2, value_bits = 2, qjl = true },
  },
  dtypes = { "bf16" },
  layouts = { "contiguous" },
  backends = {
    c = { cflags = "-O2" },
    cuda = { archs = { "sm_80", "sm_89", "sm_90" } },
    vulkan = { subgroups = true },
    wgsl = { subgroups = true },
  },
}
