-- q_heads not a multiple of kv_heads
return family {
  name = "bad",
  models = {
    model { name = "m", head_dim = 128, q_heads = 8, kv_heads = 2 },
    model { name = "x", head_dim = 128, q_heads = 12, kv_heads = 8 },
  },
  quant = {
    quant { key_bits = 4, value_bits = 4 },
  },
}
