-- 128 q heads on one kv head
return family {
  name = "bad",
  models = {
    model { name = "m", head_dim = 128, q_heads = 128, kv_heads = 1 },
  },
  quant = {
    quant { key_bits = 4, value_bits = 4 },
  },
}
