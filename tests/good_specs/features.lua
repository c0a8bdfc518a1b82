-- Every accepted form, with the defaults left out: no dtypes (f16), no
-- backends (c only).  Lua is allowed where it helps: head_dim computed by
-- division (128.0, an integral float), models made in a loop.
local models = {}
for _, m in ipairs({ { "a", 16, 8 }, { "b", 32, 16 } }) do
  -- a and b share head_dim 128 and group 2: their variants are the same.
  models[#models + 1] = model { name = m[1], head_dim = 4096 / 32,
                                q_heads = m[2], kv_heads = m[3] }
end
models[#models + 1] = model { name = "small", head_dim = 64, q_heads = 9, kv_heads = 3 }

return family {
  name = "features",
  models = models,
  quant = {
    quant { key_bits = 4, value_bits = 4 },
    quant { key_bits = 4, value_bits = 4 }, -- a duplicate: dropped
    quant { key_bits = 3, value_bits = 2, outliers = { count = 8, bits = 16 },
            norm_correction = true, seed = 0xdeadbeefcafef00d },
    quant { key_bits = 2, value_bits = 4, outliers = { count = 0, bits = 5 } },
  },
  layouts = { { paged = 32 }, "contiguous", paged(32) },
}
