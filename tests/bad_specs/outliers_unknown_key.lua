-- outliers.bit instead of outliers.bits
return family {
  name = "bad",
  models = {
    model { name = "m", head_dim = 128, q_heads = 8, kv_heads = 2 },
  },
  quant = {
    quant { key_bits = 3, value_bits = 3, outliers = { count = 8, bit = 4 } },
  },
}
