-- gpu_shapes.lua - shapes and options the shipped specs leave out, for the
-- GPU verify in bench/gpu.sh: head_dim 32, 80, 96 and 256 (non-powers of two
-- take the dense rotation and the generic kernels), groups 1, 3 and 8, 2- to
-- 8-bit widths (8-bit keys at head_dim 32 take the tensor-core encode's
-- boundary search, where no cell grid fits), raw f16 outliers, min-max
-- values, norm correction, QJL, and pages of 8 tokens (a divisor of 32, the
-- fast path's chunk) and 48 (neither a divisor nor a multiple: the generic
-- kernel).  Every GPU backend verifies
-- it (cuda, then vulkan and wgsl in their sections).
return family {
  name = "gpu_shapes",
  models = {
    model { name = "d32", head_dim = 32, q_heads = 8, kv_heads = 8 },
    model { name = "d80", head_dim = 80, q_heads = 24, kv_heads = 8 },
    model { name = "d96", head_dim = 96, q_heads = 32, kv_heads = 4 },
    model { name = "d256", head_dim = 256, q_heads = 24, kv_heads = 8 },
  },
  quant = {
    quant { key_bits = 4, value_bits = 4 },
    quant { key_bits = 2, value_bits = 2 },
    quant { key_bits = 3, value_bits = 8, norm_correction = true },
    quant { key_bits = 8, value_bits = 4 },
    quant { key_bits = 4, value_bits = 2, qjl = true, outliers = { count = 8, bits = 16 } },
    quant { key_bits = 4, value_bits = 4, value_method = "minmax", value_group = 16 },
  },
  dtypes = { "f16" },
  layouts = { "contiguous", paged(8), paged(48) },
  backends = { cuda = { archs = { "sm_90" } }, vulkan = {}, wgsl = { subgroups = true } },
}
