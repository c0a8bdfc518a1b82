-- nam instead of name: the unknown key is named, not a missing name
return family {
  name = "bad",
  models = {
    model { nam = "m", head_dim = 128, q_heads = 8, kv_heads = 2 },
  },
  quant = {
    quant { key_bits = 4, value_bits = 4 },
  },
}
