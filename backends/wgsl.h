/* wgsl.h - the WebGPU backend's entry points beyond the vtable: validating
 * generated WGSL with the WebGPU implementation (tqgen does it before it
 * writes a module, so a broken template never ships). */
#ifndef TQ_WGSL_H
#define TQ_WGSL_H

#include "emit.h"
#include "tq.h"

typedef struct tq_wgsl_validator tq_wgsl_validator;

/* A device for validation: with shader-f16 and subgroups when the adapter
 * has them.  TQ_ERR_UNAVAILABLE (err says why) without a WebGPU library or
 * adapter. */
tq_status tq_wgsl_validator_open(tq_wgsl_validator **out, char *err,
                                 size_t errn);
void tq_wgsl_validator_close(tq_wgsl_validator *val);
/* Can this validator's device compile flavour f? */
int tq_wgsl_validator_has(const tq_wgsl_validator *val, tqg_wgsl_flavour f);
/* Compiles src (variant v, flavour f) into a shader module and every
 * entry point's pipeline; TQ_ERR_COMPILE with "WGSL error in generated
 * <variant>.<flavour>.wgsl:LINE:COL: ... (from templates/...:LINE)". */
tq_status tq_wgsl_validate(tq_wgsl_validator *val, const tq_variant *v,
                           tqg_wgsl_flavour f, const tqg_source *src, char *err,
                           size_t errn);

#endif
