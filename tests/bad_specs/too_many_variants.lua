-- 32 head_dims x 8 bit widths x 3 dtypes x 2 layouts = 1536
local models, quants = {}, {}
for d = 16, 512, 16 do
  models[#models + 1] = model { name = "d" .. d, head_dim = d, q_heads = 4, kv_heads = 1 }
end
for b = 1, 8 do quants[b] = quant { key_bits = b, value_bits = b } end
return family {
  name = "big",
  models = models,
  quant = quants,
  dtypes = { "f16", "bf16", "f32" },
  layouts = { "contiguous", paged(16) },
}
