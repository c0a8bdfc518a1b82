/* output.h - writing a spec's generated tree: one source per variant and
 * backend, the C dispatch table (.c + .h) and manifest.json.  Same spec in,
 * byte-identical files out: nothing time- or machine-dependent is written. */
#ifndef TQG_OUTPUT_H
#define TQG_OUTPUT_H

#include <stdio.h>

#include "spec.h"

typedef struct tqg_output_options {
  const char *dir;
  unsigned backends; /* bit (1 << tqg_backend) for each backend to emit */
  int aot;           /* also build binaries where the backend has them */
  int quiet;
} tqg_output_options;

/* Backends this build can emit. */
unsigned tqg_emittable_backends(void);

/* The relative paths tqg_write_outputs writes, one per line. */
void tqg_print_files(const tqg_spec *spec, unsigned backends, FILE *f);

tq_status tqg_write_outputs(const tqg_spec *spec, const tqg_output_options *o,
                            char *err, size_t errn);

/* Writes dir/rel through a temporary file and a rename. */
tq_status tqg_write_file(const char *dir, const char *rel, const char *text,
                         size_t len, char *err, size_t errn);

#endif
