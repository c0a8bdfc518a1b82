-- key_bits is required
return family {
  name = "bad",
  models = {
    model { name = "m", head_dim = 128, q_heads = 8, kv_heads = 2 },
  },
  quant = {
    quant { value_bits = 4 },
  },
}
