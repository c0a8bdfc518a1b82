/* emit.h - emitters: one per backend, variant -> source text.  Used by the
 * tqgen CLI (AOT) and by the runtime's JIT, so both produce the same bytes
 * for the same variant. */
#ifndef TQG_EMIT_H
#define TQG_EMIT_H

#include "core/tq_types.h"
#include "source.h"

/* Embedded text of a file under templates/ (or runtime/tq_abi.h as "abi"). */
const char *tqg_template(const char *name);

/* A hash of every embedded template: part of the JIT cache's validity. */
uint64_t tqg_templates_id(void);

/* Symbol prefix of a variant's C functions: "tqk_<canonical name>". */
void tqg_c_symbol(const tq_variant *v, char *buf, size_t n);

/* The portable C source of every op of one variant.  origin names the spec
 * (or "jit") in the header comment. */
tq_status tqg_emit_c(const tq_variant *v, const char *origin, tqg_source *out,
                     char *err, size_t errn);

/* The CUDA source of every op of one variant (templates/cuda/kernel.cu);
 * entry points extern "C" tqk_<name>_<op> and _reduce. */
tq_status tqg_emit_cuda(const tq_variant *v, const char *origin,
                        tqg_source *out, char *err, size_t errn);
/* Whether v's CUDA encode runs on tensor cores (the template's TQ_EMMA: 16
 * vectors a warp, a lane's quarter vector, d/4 channels, filling whole
 * index words): the prelude emits the cell grids it searches, and the
 * launch plan sizes its grid. */
int tqg_cuda_encode_mma(const tq_variant *v);

/* The WGSL module of one variant in one flavour (templates/wgsl/kernel.wgsl;
 * entry points encode, decode, prefill, reduce, dequant).  emit_wgsl.h has
 * the flavours, bindings and the tables buffer. */
#include "emit_wgsl.h"
tq_status tqg_emit_wgsl(const tq_variant *v, tqg_wgsl_flavour flavour,
                        const char *origin, tqg_source *out, char *err,
                        size_t errn);

/* Shared by the emitters: header comment, tq_abi.h, defines, tables. */
tq_status tqg_emit_prelude(const tq_variant *v, const char *origin,
                           const char *backend, const char *abi_prefix,
                           const char *table_decl, tqg_source *s, char *err,
                           size_t errn);

#endif
