-- The quantization choices of the SmolLM2 quality report
-- (bench/smollm2_quality.sh), kept apart from specs/smollm2.lua so the
-- shipped spec stays small: every variant of a shipped spec is verified and
-- compiled for every GPU arch in CI.  K/V bits 4/4, 3/4, 3/3 and 2/2, each
-- plain, with QJL on the keys, with 16 of 64 outlier channels one bit wider
-- (the paper's 2.5 / 3.5-bit mixes: a quarter of the channels), and both.
local q = {}
for _, kv in ipairs({ { 4, 4 }, { 3, 4 }, { 3, 3 }, { 2, 2 } }) do
  local k, v = kv[1], kv[2]
  local wide = { count = 16, bits = k + 1 }
  q[#q + 1] = quant { key_bits = k, value_bits = v }
  q[#q + 1] = quant { key_bits = k, value_bits = v, qjl = true }
  q[#q + 1] = quant { key_bits = k, value_bits = v, outliers = wide }
  q[#q + 1] = quant { key_bits = k, value_bits = v, outliers = wide, qjl = true }
end
return family {
  name = "smollm2_quality",
  models = {
    model { name = "SmolLM2-135M", head_dim = 64, q_heads = 9, kv_heads = 3 },
  },
  quant = q,
  dtypes = { "f32" },
  backends = { c = { } },
}
