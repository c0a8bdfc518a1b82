-- loading another file
local f = loadfile("/etc/passwd")
return family {
  name = "bad",
  models = {
    model { name = "m", head_dim = 128, q_heads = 8, kv_heads = 2 },
  },
  quant = {
    quant { key_bits = 4, value_bits = 4 },
  },
}
