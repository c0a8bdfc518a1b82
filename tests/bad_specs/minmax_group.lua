-- a minmax group that does not divide head_dim
return family {
  name = "bad",
  models = {
    model { name = "m", head_dim = 128, q_heads = 8, kv_heads = 2 },
  },
  quant = {
    quant { key_bits = 4, value_bits = 4, value_method = "minmax", value_group = 48 },
  },
}
