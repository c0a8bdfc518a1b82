-- no models
return family {
  name = "bad",
  models = {

  },
  quant = {
    quant { key_bits = 4, value_bits = 4 },
  },
}
