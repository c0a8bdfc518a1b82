-- qjl needs a key bit for the sign plus one MSE bit
return family {
  name = "bad",
  models = {
    model { name = "m", head_dim = 128, q_heads = 8, kv_heads = 2 },
  },
  quant = {
    quant { key_bits = 1, value_bits = 2, qjl = true },
  },
}
