-- outliers at 12 bits (allowed 1..8 or 16)
return family {
  name = "bad",
  models = {
    model { name = "m", head_dim = 128, q_heads = 8, kv_heads = 2 },
  },
  quant = {
    quant { key_bits = 3, value_bits = 3, outliers = { count = 32, bits = 12 } },
  },
}
