/* core.h - gen's math core: PRNG, Lloyd-Max codebooks, rotations, bit
 * packing, half-precision conversion, variant names, hashes and slot layouts.
 *
 * No Lua, no I/O.  The runtime, the reference and every emitter build on this
 * layer; it includes nothing above itself.  Floating point here uses only
 * + - * / and sqrt (correctly rounded by IEEE 754) and is compiled without
 * FMA contraction, so codebooks, rotations and projections are bit-identical
 * on every platform: AOT output made on one machine agrees with JIT on
 * another. */
#ifndef TQG_CORE_H
#define TQG_CORE_H

#include "tq_types.h"

/* ---- PRNG: xoshiro256** seeded through splitmix64 ---------------------- */
typedef struct tqg_rng {
  uint64_t s[4];
} tqg_rng;

void tqg_rng_seed(tqg_rng *r, uint64_t seed);
uint64_t tqg_rng_next(tqg_rng *r);
double tqg_rng_uniform(tqg_rng *r); /* [0, 1), 53 bits */
double tqg_rng_normal(tqg_rng *r);  /* N(0, 1), Marsaglia polar method */
/* Natural log from + - * / only (frexp-free), so normals are portable. */
double tqg_log(double x);
/* A fresh seed derived from a parent seed and a purpose tag. */
uint64_t tqg_seed_derive(uint64_t seed, uint64_t tag);

/* ---- Lloyd-Max scalar quantizer for N(0,1) ----------------------------- */
typedef struct tqg_codebook {
  int bits;
  int levels;                /* 1 << bits */
  double centroid[256];      /* ascending */
  double boundary[255];      /* boundary[i] between centroid i and i+1 */
  double mse;                /* E[(X - Q(X))^2] for X ~ N(0,1) */
  int iterations;
} tqg_codebook;

/* Deterministic; converged to 1e-10 in the largest centroid move. */
tq_status tqg_lloyd_max(int bits, tqg_codebook *cb);
/* Index of the nearest centroid: the number of boundaries <= x. */
int tqg_codebook_index(const tqg_codebook *cb, double x);
double tqg_normal_cdf(double x);
/* A constant-time search for kernels: u = x scale + offset puts x in cell
 * round(u) of [0, cells), and the grid is chosen so that every cell holds at
 * most one boundary, none within TQG_GRID_MARGIN (in cells) of its edges.
 * Then for |x| <= range the index is base + (u >= threshold) of x's cell,
 * exact up to the rounding of u: a one-cell difference needs x within
 * float rounding of a boundary. */
#define TQG_GRID_MARGIN 0.05
typedef struct tqg_grid {
  int cells; /* 0: no grid fits in max_cells */
  double scale, offset;
} tqg_grid;
/* The grid with the fewest cells that covers [-range, range]. */
int tqg_codebook_grid(const tqg_codebook *cb, double range, int max_cells, tqg_grid *g);
/* Cell c: the boundaries below its lower edge, and the one inside it in u
 * units (c + 2, which no u of the cell reaches, when it holds none). */
void tqg_grid_cell(const tqg_codebook *cb, const tqg_grid *g, int c, int *base,
                   double *threshold);
double tqg_normal_pdf(double x);

/* ---- Rotations --------------------------------------------------------- */
typedef enum { TQG_ROT_WHT, TQG_ROT_DENSE } tqg_rot_kind;

/* y = R x with R orthogonal.  WHT: R = H D / sqrt(d), D random signs, for
 * power-of-two d.  DENSE: Haar-random orthogonal matrix (Householder QR of a
 * Gaussian matrix), for any d. */
typedef struct tqg_rotation {
  int dim;
  tqg_rot_kind kind;
  double *signs;  /* WHT: d entries of +-1 */
  double *matrix; /* DENSE: d*d row-major */
} tqg_rotation;

tq_status tqg_rotation_init(tqg_rotation *rot, int dim, uint64_t seed);
void tqg_rotation_free(tqg_rotation *rot);
void tqg_rotate(const tqg_rotation *rot, const double *x, double *y);
void tqg_rotate_inverse(const tqg_rotation *rot, const double *y, double *x);
/* In-place unnormalized Walsh-Hadamard transform, n a power of two. */
void tqg_wht(double *x, int n);
/* The rotation as a dense matrix R (d*d row-major): for emitters and tests. */
void tqg_rotation_matrix(const tqg_rotation *rot, double *out);

/* ---- Everything a kernel of a variant needs as constants --------------- */
typedef struct tqg_tables {
  tqg_codebook key_cb;     /* main key part: key_bits - qjl */
  tqg_codebook value_cb;   /* TQ values: value_bits */
  tqg_codebook outlier_cb; /* outlier parts when outlier_bits <= 8 */
  tqg_rotation main_rot;   /* dim = head_dim - outlier_count */
  tqg_rotation outlier_rot;/* dim = outlier_count (when quantized) */
  double *qjl;             /* QJL projection S, main_dim^2, N(0,1); or NULL */
} tqg_tables;

tq_status tqg_tables_init(const tq_variant *v, tqg_tables *t);
void tqg_tables_free(tqg_tables *t);

/* ---- Bit packing ------------------------------------------------------- */
/* Index i of width b occupies bits [i*b, i*b + b) of a little-endian bit
 * stream: bit k of the stream is bit (k % 8) of byte k / 8.  Padded with
 * zero bits to a multiple of 4 bytes. */
int tqg_packed_bytes(int n, int bits); /* padded to 4 */
void tqg_pack(const uint8_t *idx, int n, int bits, uint8_t *out);
unsigned tqg_unpack_one(const uint8_t *in, int i, int bits);
void tqg_unpack(const uint8_t *in, int n, int bits, uint8_t *idx);

/* ---- Half precision (round to nearest even) ---------------------------- */
uint16_t tqg_f32_to_f16(float f);
float tqg_f16_to_f32(uint16_t h);
uint16_t tqg_f32_to_bf16(float f);
float tqg_bf16_to_f32(uint16_t h);
int tqg_dtype_size(tq_dtype t);
const char *tqg_dtype_name(tq_dtype t);
/* Element i of an activation array of type t. */
double tqg_load(const void *p, tq_dtype t, size_t i);
void tqg_store(void *p, tq_dtype t, size_t i, double x);

/* ---- Variants ---------------------------------------------------------- */
/* Checks every field; on error fills msg with the field, its value and the
 * allowed values, and returns TQ_ERR_INVALID. */
tq_status tqg_variant_check(const tq_variant *v, char *msg, size_t n);
/* Resets fields the variant does not use (value_group without min-max
 * values, outlier_bits without outliers, block_size when contiguous) to
 * their defaults, so equal names mean equal structs. */
void tqg_variant_normalize(tq_variant *v);
/* Canonical name, e.g. d128_g4_k4v4_f16 or d96_g2_k3v4_o16b4_qjl_bf16_paged16.
 * Returns the length (like snprintf). */
int tqg_variant_name(const tq_variant *v, char *buf, size_t n);
/* XXH64 of "<name>@<generator version>". */
uint64_t tqg_variant_hash(const tq_variant *v);
/* Slot layouts (see docs/FORMAT.md). */
void tqg_key_layout(const tq_variant *v, tq_slot_layout *l);
void tqg_value_layout(const tq_variant *v, tq_slot_layout *l);
/* Packed bytes per token per kv head (key slot + value slot). */
int tqg_bytes_per_token(const tq_variant *v);
/* Bits per coordinate of K and V together, everything stored counted. */
double tqg_bits_per_coord(const tq_variant *v);
const char *tqg_op_name(tq_op op);
/* Parses "encode", "decode", ... ; returns TQ_OP_COUNT when unknown. */
tq_op tqg_op_parse(const char *s);
/* A default variant (hd 128, group 1, 4/4 bits, f16, contiguous). */
void tqg_variant_default(tq_variant *v);

#endif
