/* spec.c - the sandboxed Lua 5.4 spec loader.
 *
 * Three stages, data flowing one way:
 *   1. run the spec in a fresh Lua state (only base, string, table, math and
 *      utf8; a heap cap; an instruction budget).  The constructors family{},
 *      model{}, quant{} and paged() return their argument and remember the
 *      line they were called from in weak side tables, since Lua tables carry
 *      no line information;
 *   2. read the returned family{} table into plain C declarations, checking
 *      every key and type, and every range through tqg_variant_check;
 *   3. expand models x quants x dtypes x layouts into distinct variants, after
 *      the Lua state is closed.
 * Every Lua API call that can raise (allocation, a memory error) runs under
 * lua_pcall, so nothing can reach the panic function and abort. */
#include "spec.h"

#include <errno.h>
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <lualib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

#define HOOK_EVERY 1000 /* instructions between two budget checks */
/* Allocation is charged to the instruction budget too, one instruction per
 * this many bytes: one instruction can copy megabytes (s = s .. x in a loop),
 * and the hook alone would let that run for minutes. */
#define BYTES_PER_INSTRUCTION 64
#define MAX_QUANTS 256 /* entries of family.quant */
#define MAX_DTYPES 16  /* entries of family.dtypes */
#define MAX_LAYOUTS 64 /* entries of family.layouts */
#define MAX_FILE_BYTES (1u << 20)

/* ---- backends ------------------------------------------------------------ */

/* NULL-terminated: also the allowed keys of family.backends. */
static const char *const backend_names[TQG_BACKEND_COUNT + 1] = {
    "c", "cuda", "vulkan", "wgsl", NULL};

const char *tqg_backend_name(tqg_backend b) {
  return b >= 0 && b < TQG_BACKEND_COUNT ? backend_names[b] : "?";
}

tqg_backend tqg_backend_parse(const char *s) {
  for (int i = 0; i < TQG_BACKEND_COUNT; i++)
    if (s && strcmp(s, backend_names[i]) == 0) return (tqg_backend)i;
  return TQG_BACKEND_COUNT;
}

/* ---- the loader's state (one per tqg_spec_load call) ------------------- */

typedef struct quant_decl {
  tq_variant v; /* quant fields set, the rest default */
  int line;
} quant_decl;

typedef struct layout_decl {
  tq_layout layout;
  int block_size;
} layout_decl;

typedef struct loader {
  /* allocator */
  size_t used, limit;
  /* instruction budget */
  long long instructions;
  int last_line; /* line seen by the last budget check, for memory errors */
  /* input */
  const char *path;
  const char *src;
  size_t srclen;
  int src_lines;
  char short_src[LUA_IDSIZE]; /* how Lua abbreviates path in its messages */
  /* output of stage 2 */
  tqg_spec *spec;
  int family_line;
  quant_decl *quants; /* malloc'd; freed by tqg_spec_load on every path */
  int n_quants;
  tq_dtype dtypes[MAX_DTYPES];
  int n_dtypes;
  layout_decl layouts[MAX_LAYOUTS];
  int n_layouts;
  /* first error */
  tq_status status;
  char *err;
  size_t errn;
} loader;

/* "<file>:<line>: <context>: <what>"; keeps the first error only. */
static tq_status fail(loader *S, int line, const char *ctx, const char *fmt,
                      ...) {
  if (S->status != TQ_OK) return S->status;
  S->status = TQ_ERR_INVALID;
  if (!S->err || !S->errn) return S->status;
  int k = line > 0
              ? snprintf(S->err, S->errn, "%s:%d: %s: ", S->path, line, ctx)
              : snprintf(S->err, S->errn, "%s: %s: ", S->path, ctx);
  if (k >= 0 && (size_t)k < S->errn) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(S->err + k, S->errn - (size_t)k, fmt, ap);
    va_end(ap);
  }
  return S->status;
}

/* A spec's strings echoed in a message: at most 40 bytes, printable. */
static const char *echo(const char *s, size_t len, char *buf, size_t n) {
  size_t j = 0;
  for (size_t i = 0; i < len && j + 4 < n && i < 40; i++)
    buf[j++] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
  if (len > 40 && j + 4 < n) buf[j++] = '.', buf[j++] = '.', buf[j++] = '.';
  buf[j] = 0;
  return buf;
}

/* ---- stage 1: the sandbox ------------------------------------------------ */

static loader *loader_of(lua_State *L) {
  void *ud;
  lua_getallocf(L, &ud);
  return ud;
}

/* Refuses growth past the limit; Lua turns the NULL into a memory error.
 * Growth is charged to the budget; the next hook call raises if it is spent. */
static void *spec_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  loader *S = ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    S->used -= old;
    return NULL;
  }
  if (nsize > old && nsize - old > S->limit - S->used) return NULL;
  void *p = realloc(ptr, nsize);
  if (p) {
    S->used = S->used - old + nsize;
    if (nsize > old)
      S->instructions += (long long)((nsize - old) / BYTES_PER_INSTRUCTION);
  }
  return p;
}

/* The line a function at stack level 'level' is running, or 0. */
static int running_line(lua_State *L, int level) {
  lua_Debug ar;
  if (!lua_getstack(L, level, &ar) || !lua_getinfo(L, "l", &ar)) return 0;
  return ar.currentline > 0 ? ar.currentline : 0;
}

/* The line of the nearest Lua function calling a constructor (skipping C
 * frames such as pcall). */
static int caller_line(lua_State *L) {
  for (int level = 1; level < 64; level++) {
    lua_Debug ar;
    if (!lua_getstack(L, level, &ar)) break;
    if (lua_getinfo(L, "l", &ar) && ar.currentline > 0) return ar.currentline;
  }
  return 0;
}

static void budget_message(loader *S, int line, char *buf, size_t n) {
  if (line)
    snprintf(buf, n,
             "%s:%d: spec ran more than %d instructions (infinite loop?)",
             S->path, line, TQG_SPEC_INSTRUCTION_LIMIT);
  else
    snprintf(buf, n, "%s: spec ran more than %d instructions (infinite loop?)",
             S->path, TQG_SPEC_INSTRUCTION_LIMIT);
}

static void budget_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  loader *S = loader_of(L);
  int line = running_line(L, 0); /* level 0: the function being run */
  if (line) S->last_line = line;
  S->instructions += HOOK_EVERY;
  if (S->instructions > TQG_SPEC_INSTRUCTION_LIMIT) {
    char msg[700];
    budget_message(S, line, msg, sizeof msg);
    lua_pushstring(L, msg);
    lua_error(L);
  }
}

static const char *const constructor_names[] = {"family", "model", "quant",
                                                "paged"};
enum { K_FAMILY, K_MODEL, K_QUANT, K_PAGED, K_COUNT };
static const char lines_key[] = "tqg.lines"; /* registry: kind -> weak table */

/* Raises "<file>:<line>: <what>" from inside a constructor. */
static int raise_at(lua_State *L, int line, const char *what) {
  loader *S = loader_of(L);
  lua_pushfstring(L, "%s:%d: %s", S->path, line, what);
  return lua_error(L);
}

/* family{...}, model{...}, quant{...}: remember the caller's line and return
 * the table itself.  Upvalue 1: the kind's side table; 2: the kind. */
static int construct(lua_State *L) {
  int kind = (int)lua_tointeger(L, lua_upvalueindex(2));
  int line = caller_line(L);
  if (lua_type(L, 1) != LUA_TTABLE || lua_gettop(L) != 1) {
    lua_pushfstring(L, "%s: expected one table, as in %s { ... }, got %s",
                    constructor_names[kind], constructor_names[kind],
                    lua_gettop(L) ? luaL_typename(L, 1) : "nothing");
    return raise_at(L, line, lua_tostring(L, -1));
  }
  lua_pushvalue(L, 1);
  lua_pushinteger(L, line);
  lua_rawset(L, lua_upvalueindex(1));
  lua_settop(L, 1);
  return 1;
}

/* paged(n): the layout { paged = n }, tagged with the caller's line. */
static int construct_paged(lua_State *L) {
  int line = caller_line(L);
  if (lua_gettop(L) != 1 || !lua_isinteger(L, 1)) {
    if (lua_type(L, 1) == LUA_TNUMBER)
      lua_pushfstring(L, "paged: block_size must be an integer, got %f",
                      lua_tonumber(L, 1));
    else
      lua_pushfstring(L,
                      "paged: block_size must be an integer, as in "
                      "paged(16), got %s",
                      lua_gettop(L) ? luaL_typename(L, 1) : "nothing");
    return raise_at(L, line, lua_tostring(L, -1));
  }
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "paged");
  lua_pushvalue(L, -1);
  lua_pushinteger(L, line);
  lua_rawset(L, lua_upvalueindex(1));
  return 1;
}

static const char *const blocked_globals[] = {
    "io",      "os",      "package",  "debug", "coroutine",
    "require", "dofile",  "loadfile", "load",  "loadstring",
    "module",  "setfenv", "getfenv",  NULL};

/* __index of _G: reading a global that does not exist is an error, so a
 * typo (modle { }) or an escape attempt (io.open) names itself. */
static int strict_index(lua_State *L) {
  const char *name = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
  if (!name) return luaL_error(L, "reading a global with a non-string key");
  for (int i = 0; blocked_globals[i]; i++)
    if (strcmp(name, blocked_globals[i]) == 0)
      return luaL_error(
          L,
          "'%s' is not available in a spec: the sandbox has no io, "
          "os, package, debug, coroutine, require, dofile, "
          "loadfile or load",
          name);
  return luaL_error(L,
                    "unknown global '%s' (the spec constructors are family, "
                    "model, quant and paged)",
                    name);
}

/* setmetatable without __gc: Lua runs finalizers with hooks off, so a
 * looping __gc would escape the instruction budget.  An object is marked for
 * finalization only when its metatable has __gc at this call, so refusing it
 * here is enough.  Upvalue 1: the base library's setmetatable. */
static int safe_setmetatable(lua_State *L) {
  if (lua_type(L, 2) == LUA_TTABLE) {
    lua_pushliteral(L, "__gc");
    if (lua_rawget(L, 2) != LUA_TNIL)
      return luaL_error(L,
                        "setmetatable: __gc is not allowed in a spec "
                        "(finalizers run outside the instruction budget)");
    lua_pop(L, 1);
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

static void open_sandbox(lua_State *L) {
  static const struct {
    const char *name;
    lua_CFunction open;
  } libs[] = {{LUA_GNAME, luaopen_base},
              {LUA_STRLIBNAME, luaopen_string},
              {LUA_TABLIBNAME, luaopen_table},
              {LUA_MATHLIBNAME, luaopen_math},
              {LUA_UTF8LIBNAME, luaopen_utf8}};
  for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++) {
    luaL_requiref(L, libs[i].name, libs[i].open, 1);
    lua_pop(L, 1);
  }
  lua_pushglobaltable(L);
  for (int i = 0; blocked_globals[i]; i++) {
    lua_pushnil(L);
    lua_setfield(L, -2, blocked_globals[i]);
  }
  lua_getfield(L, -1, "setmetatable");
  lua_pushcclosure(L, safe_setmetatable, 1);
  lua_setfield(L, -2, "setmetatable");
  /* string.dump makes binary chunks; also reachable as ("").dump. */
  lua_getfield(L, -1, LUA_STRLIBNAME);
  lua_pushnil(L);
  lua_setfield(L, -2, "dump");
  lua_pop(L, 1);

  /* Side tables of constructor lines, weak in their keys. */
  lua_createtable(L, K_COUNT, 0);
  for (int k = 0; k < K_COUNT; k++) {
    lua_createtable(L, 0, 0);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawseti(L, -3, k + 1);
    lua_pushinteger(L, k);
    lua_pushcclosure(L, k == K_PAGED ? construct_paged : construct, 2);
    lua_setfield(L, -3, constructor_names[k]);
  }
  lua_setfield(L, LUA_REGISTRYINDEX, lines_key);

  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, strict_index);
  lua_setfield(L, -2, "__index");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable"); /* getmetatable(_G) is false, fixed */
  lua_setmetatable(L, -2);
  lua_pop(L, 1);
}

/* The line the constructor 'kind' recorded for the value at idx, or 0 when
 * the value was not made by it. */
static int tagged_line(lua_State *L, int idx, int kind) {
  int line = 0;
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) != LUA_TTABLE) return 0;
  lua_getfield(L, LUA_REGISTRYINDEX, lines_key);
  lua_rawgeti(L, -1, kind + 1);
  lua_pushvalue(L, idx);
  if (lua_rawget(L, -2) == LUA_TNUMBER) line = (int)lua_tointeger(L, -1);
  lua_pop(L, 3);
  return line;
}

/* ---- stage 2: reading the family ---------------------------------------- */

/* Where an error is reported: the line and the context before the colon. */
typedef struct where {
  int line;
  const char *ctx;
} where;

static void join(char *buf, size_t n, const char *const *names) {
  size_t len = 0;
  buf[0] = 0;
  for (int i = 0; names[i] && len < n; i++)
    len +=
        (size_t)snprintf(buf + len, n - len, "%s%s", i ? ", " : "", names[i]);
}

/* Every key of table t is one of 'allowed'.  With several unknown keys the
 * alphabetically first is named, so the message does not depend on Lua's
 * (seeded) hash order. */
static tq_status check_keys(loader *S, lua_State *L, int t, where w,
                            const char *const *allowed, const char *what) {
  char list[256], bad[64] = "", shown[64];
  int positional = 0;
  t = lua_absindex(L, t);
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) {
      positional = 1;
      continue;
    }
    size_t len;
    const char *key = lua_tolstring(L, -1, &len);
    int ok = 0;
    for (int i = 0; allowed[i] && !ok; i++) ok = strcmp(key, allowed[i]) == 0;
    echo(key, len, shown, sizeof shown);
    if (!ok && (!bad[0] || strcmp(shown, bad) < 0))
      snprintf(bad, sizeof bad, "%s", shown);
  }
  join(list, sizeof list, allowed);
  if (bad[0])
    return fail(S, w.line, w.ctx, "unknown %s '%s'; allowed %ss: %s", what, bad,
                what, list);
  if (positional)
    return fail(S, w.line, w.ctx,
                "entries must be written %s = value (found a positional or "
                "non-string key); allowed %ss: %s",
                what, what, list);
  return TQ_OK;
}

static int rawfield(lua_State *L, int t, const char *key) {
  lua_pushstring(L, key);
  return lua_rawget(L, t);
}

/* An integer field: absent -> *present = 0 (or an error when required). */
static tq_status get_integer(loader *S, lua_State *L, int t, const char *key,
                             where w, int required, lua_Integer lo,
                             lua_Integer hi, lua_Integer *out, int *present) {
  tq_status st = TQ_OK;
  t = lua_absindex(L, t);
  int type = rawfield(L, t, key);
  if (present) *present = type != LUA_TNIL;
  if (type == LUA_TNIL) {
    if (required)
      st = fail(S, w.line, w.ctx, "missing key '%s' (an integer)", key);
  } else if (type != LUA_TNUMBER) {
    st = fail(S, w.line, w.ctx, "%s must be an integer, got %s", key,
              lua_typename(L, type));
  } else {
    int isint;
    lua_Integer i = lua_tointegerx(L, -1, &isint);
    if (!isint)
      st = fail(S, w.line, w.ctx, "%s must be an integer, got %.14g", key,
                (double)lua_tonumber(L, -1));
    else if (i < lo || i > hi)
      st = fail(S, w.line, w.ctx, "%s = %lld is out of range", key,
                (long long)i);
    else
      *out = i;
  }
  lua_pop(L, 1);
  return st;
}

static tq_status get_int(loader *S, lua_State *L, int t, const char *key,
                         where w, int required, int *out) {
  lua_Integer i = *out;
  tq_status st =
      get_integer(S, L, t, key, w, required, INT_MIN, INT_MAX, &i, NULL);
  *out = (int)i;
  return st;
}

static tq_status get_bool(loader *S, lua_State *L, int t, const char *key,
                          where w, int *out) {
  tq_status st = TQ_OK;
  int type = rawfield(L, lua_absindex(L, t), key);
  if (type == LUA_TBOOLEAN)
    *out = lua_toboolean(L, -1);
  else if (type != LUA_TNIL)
    st = fail(S, w.line, w.ctx, "%s must be a boolean (true or false), got %s",
              key, lua_typename(L, type));
  lua_pop(L, 1);
  return st;
}

/* A string field of at most n-1 bytes without control characters; absent
 * leaves out untouched. */
static tq_status get_string(loader *S, lua_State *L, int t, const char *key,
                            where w, int required, char *out, size_t n) {
  tq_status st = TQ_OK;
  int type = rawfield(L, lua_absindex(L, t), key);
  if (type == LUA_TNIL) {
    if (required)
      st = fail(S, w.line, w.ctx, "missing key '%s' (a string)", key);
  } else if (type != LUA_TSTRING) {
    st = fail(S, w.line, w.ctx, "%s must be a string, got %s", key,
              lua_typename(L, type));
  } else {
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    int ctl = 0;
    for (size_t i = 0; i < len; i++)
      ctl |= (unsigned char)s[i] < 0x20 || s[i] == 0x7f;
    if (len == 0 || len >= n)
      st = fail(S, w.line, w.ctx, "%s must have 1 to %zu characters, got %zu",
                key, n - 1, len);
    else if (ctl)
      st =
          fail(S, w.line, w.ctx, "%s must not contain control characters", key);
    else
      memcpy(out, s, len + 1);
  }
  lua_pop(L, 1);
  return st;
}

/* The field 'key' of t as a list: pushes it and sets *n, or pushes nil and
 * sets *n = -1 when absent.  Non-empty, at most max entries, keys 1..n. */
static tq_status get_list(loader *S, lua_State *L, int t, const char *key,
                          where w, int max, int *n) {
  int type = rawfield(L, lua_absindex(L, t), key);
  *n = -1;
  if (type == LUA_TNIL) return TQ_OK;
  if (type != LUA_TTABLE)
    return fail(S, w.line, w.ctx, "%s must be a list { ... }, got %s", key,
                lua_typename(L, type));
  lua_Unsigned len = lua_rawlen(L, -1);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pop(L, 1);
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 ||
        (lua_Unsigned)lua_tointeger(L, -1) > len) {
      lua_pop(L, 1);
      return fail(S, w.line, w.ctx,
                  "%s must be a list { a, b, ... } without keys or holes", key);
    }
  }
  if (len == 0) return fail(S, w.line, w.ctx, "%s is empty", key);
  if (len > (lua_Unsigned)max)
    return fail(S, w.line, w.ctx, "%s has %llu entries; at most %d", key,
                (unsigned long long)len, max);
  *n = (int)len;
  return TQ_OK;
}

static const char *const model_keys[] = {"name", "head_dim", "q_heads",
                                         "kv_heads", NULL};

static tq_status read_model(loader *S, lua_State *L, int t, int line) {
  tqg_spec *spec = S->spec;
  tqg_model *m = &spec->models[spec->n_models];
  char ctx[96];
  where w = {line, "model"};
  /* The name, when there is one, says which model an error is about. */
  if (rawfield(L, t, "name") == LUA_TSTRING) {
    size_t len;
    const char *name = lua_tolstring(L, -1, &len);
    char shown[64];
    snprintf(ctx, sizeof ctx, "model '%s'",
             echo(name, len, shown, sizeof shown));
    w.ctx = ctx;
  }
  lua_pop(L, 1);
  if (check_keys(S, L, t, w, model_keys, "key") ||
      get_string(S, L, t, "name", w, 1, m->name, sizeof m->name) ||
      get_int(S, L, t, "head_dim", w, 1, &m->head_dim) ||
      get_int(S, L, t, "q_heads", w, 1, &m->q_heads) ||
      get_int(S, L, t, "kv_heads", w, 1, &m->kv_heads))
    return S->status;
  if (m->kv_heads < 1)
    return fail(S, line, ctx, "kv_heads = %d: must be at least 1", m->kv_heads);
  if (m->q_heads < 1)
    return fail(S, line, ctx, "q_heads = %d: must be at least 1", m->q_heads);
  if (m->q_heads % m->kv_heads)
    return fail(S, line, ctx, "q_heads = %d is not a multiple of kv_heads = %d",
                m->q_heads, m->kv_heads);
  for (int i = 0; i < spec->n_models; i++)
    if (strcmp(spec->models[i].name, m->name) == 0)
      return fail(S, line, ctx, "name already used by another model");
  tq_variant v;
  char msg[256];
  tqg_variant_default(&v);
  v.head_dim = m->head_dim;
  v.group = m->q_heads / m->kv_heads;
  if (tqg_variant_check(&v, msg, sizeof msg))
    return fail(S, line, ctx, "%s", msg);
  spec->n_models++;
  return TQ_OK;
}

static const char *const quant_keys[] = {
    "key_bits", "value_bits",      "value_method", "value_group", "outliers",
    "qjl",      "norm_correction", "seed",         NULL};
static const char *const outlier_keys[] = {"count", "bits", NULL};

static tq_status read_outliers(loader *S, lua_State *L, int t, int line,
                               tq_variant *v) {
  where w = {line, "quant: outliers"};
  int type = rawfield(L, lua_absindex(L, t), "outliers");
  if (type == LUA_TNIL) {
    lua_pop(L, 1);
    return TQ_OK;
  }
  if (type != LUA_TTABLE)
    return fail(S, line, "quant",
                "outliers must be a table { count = n, bits = b }, got %s",
                lua_typename(L, type));
  if (check_keys(S, L, -1, w, outlier_keys, "key") ||
      get_int(S, L, -1, "count", w, 1, &v->outlier_count) ||
      get_int(S, L, -1, "bits", w, 1, &v->outlier_bits))
    return S->status;
  if (v->outlier_count < 0)
    return fail(S, line, "quant", "outliers.count = %d: must be at least 0",
                v->outlier_count);
  if (v->outlier_count == 0) v->outlier_bits = 8; /* no outliers: as default */
  lua_pop(L, 1);
  return TQ_OK;
}

static tq_status read_quant(loader *S, lua_State *L, int t, int line) {
  quant_decl *q = &S->quants[S->n_quants];
  tq_variant *v = &q->v;
  tqg_variant_default(v);
  where w = {line, "quant"};
  char method[64] = "tq", msg[256];
  lua_Integer seed = TQ_DEFAULT_SEED, group = v->value_group;
  int has_group = 0;
  q->line = line;
  if (check_keys(S, L, t, w, quant_keys, "key") ||
      get_int(S, L, t, "key_bits", w, 1, &v->key_bits) ||
      get_int(S, L, t, "value_bits", w, 1, &v->value_bits) ||
      get_string(S, L, t, "value_method", w, 0, method, sizeof method) ||
      get_integer(S, L, t, "value_group", w, 0, INT_MIN, INT_MAX, &group,
                  &has_group) ||
      get_bool(S, L, t, "qjl", w, &v->qjl) ||
      get_bool(S, L, t, "norm_correction", w, &v->norm_correction))
    return S->status;
  v->value_group = (int)group;
  if (get_integer(S, L, t, "seed", w, 0, LUA_MININTEGER, LUA_MAXINTEGER, &seed,
                  NULL) ||
      read_outliers(S, L, t, line, v))
    return S->status;
  v->seed = (uint64_t)seed; /* hex literals above 2^63 wrap; keep the bits */
  if (strcmp(method, "tq") == 0)
    v->value_method = TQ_VALUE_TQ;
  else if (strcmp(method, "minmax") == 0)
    v->value_method = TQ_VALUE_MINMAX;
  else
    return fail(S, line, "quant",
                "value_method = '%s' is not allowed; allowed: "
                "\"tq\", \"minmax\"",
                method);
  if (has_group && v->value_method != TQ_VALUE_MINMAX)
    return fail(S, line, "quant",
                "value_group applies only to value_method = "
                "\"minmax\"");
  /* The checks that do not depend on the model: a head_dim that fits any
   * outlier count up to the largest one, TQ values (no value_group). */
  tq_variant n = *v;
  n.head_dim = TQ_MAX_HEAD_DIM;
  n.value_method = TQ_VALUE_TQ;
  if (n.outlier_count > 1) n.outlier_count = 1;
  if (tqg_variant_check(&n, msg, sizeof msg))
    return fail(S, line, "quant", "%s", msg);
  S->n_quants++;
  return TQ_OK;
}

static tq_status read_dtypes(loader *S, lua_State *L, int fam, where w) {
  int n;
  if (get_list(S, L, fam, "dtypes", w, MAX_DTYPES, &n)) return S->status;
  if (n < 0) {
    S->dtypes[S->n_dtypes++] = TQ_F16;
    lua_pop(L, 1);
    return TQ_OK;
  }
  for (int i = 1; i <= n; i++) {
    int type = lua_rawgeti(L, -1, i);
    size_t len;
    const char *s = type == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    tq_dtype d = TQ_F16;
    int found = 0;
    for (tq_dtype c = TQ_F16; c <= TQ_F32 && s && !found; c++)
      if (strcmp(s, tqg_dtype_name(c)) == 0) d = c, found = 1;
    if (!found) {
      char shown[64];
      if (s)
        return fail(S, w.line, w.ctx,
                    "dtypes[%d] = '%s' is not a dtype; allowed: "
                    "\"f16\", \"bf16\", \"f32\"",
                    i, echo(s, len, shown, sizeof shown));
      return fail(S, w.line, w.ctx,
                  "dtypes[%d] must be a string, got %s; allowed: "
                  "\"f16\", \"bf16\", \"f32\"",
                  i, lua_typename(L, type));
    }
    lua_pop(L, 1);
    int seen = 0;
    for (int j = 0; j < S->n_dtypes; j++) seen |= S->dtypes[j] == d;
    if (!seen) S->dtypes[S->n_dtypes++] = d;
  }
  lua_pop(L, 1);
  return TQ_OK;
}

static tq_status read_layout(loader *S, lua_State *L, int i, where w,
                             layout_decl *out) {
  static const char *const paged_keys[] = {"paged", NULL};
  int type = lua_type(L, -1);
  char ctx[64], shown[64];
  snprintf(ctx, sizeof ctx, "%s: layouts[%d]", w.ctx, i);
  if (type == LUA_TSTRING) {
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    if (strcmp(s, "contiguous") == 0) {
      out->layout = TQ_CONTIGUOUS;
      out->block_size = 16; /* the default; unused when contiguous */
      return TQ_OK;
    }
    return fail(S, w.line, ctx,
                "'%s' is not a layout; allowed: \"contiguous\" "
                "or paged(block_size)",
                echo(s, len, shown, sizeof shown));
  }
  if (type != LUA_TTABLE)
    return fail(S, w.line, ctx,
                "expected \"contiguous\" or paged(block_size), got %s",
                lua_typename(L, type));
  /* paged(n), or the plain table { paged = n } written by hand. */
  int line = tagged_line(L, -1, K_PAGED);
  where pw = {line ? line : w.line, line ? "paged" : ctx};
  if (check_keys(S, L, -1, pw, paged_keys, "key") ||
      get_int(S, L, -1, "paged", pw, 1, &out->block_size))
    return S->status;
  out->layout = TQ_PAGED;
  tq_variant v;
  char msg[256];
  tqg_variant_default(&v);
  v.layout = TQ_PAGED;
  v.block_size = out->block_size;
  if (tqg_variant_check(&v, msg, sizeof msg))
    return fail(S, pw.line, pw.ctx, "%s", msg);
  return TQ_OK;
}

static tq_status read_layouts(loader *S, lua_State *L, int fam, where w) {
  int n;
  if (get_list(S, L, fam, "layouts", w, MAX_LAYOUTS, &n)) return S->status;
  if (n < 0) {
    S->layouts[S->n_layouts++] = (layout_decl){TQ_CONTIGUOUS, 16};
    lua_pop(L, 1);
    return TQ_OK;
  }
  for (int i = 1; i <= n; i++) {
    layout_decl d;
    lua_rawgeti(L, -1, i);
    if (read_layout(S, L, i, w, &d)) return S->status;
    lua_pop(L, 1);
    int seen = 0;
    for (int j = 0; j < S->n_layouts; j++)
      seen |= S->layouts[j].layout == d.layout &&
              (d.layout == TQ_CONTIGUOUS ||
               S->layouts[j].block_size == d.block_size);
    if (!seen) S->layouts[S->n_layouts++] = d;
  }
  lua_pop(L, 1);
  return TQ_OK;
}

/* Flags go to a compiler's command line: keep them to characters no shell
 * or build tool gives a meaning to. */
static int flag_char_ok(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || (c && strchr(" -_=.,+/:", c));
}

static tq_status read_cuda_archs(loader *S, lua_State *L, int t, where w,
                                 tqg_backend_options *o) {
  int n;
  if (get_list(S, L, t, "archs", w, 32, &n)) return S->status;
  size_t len = 0;
  for (int i = 1; i <= n; i++) {
    int type = lua_rawgeti(L, -1, i);
    size_t sl = 0;
    const char *s = type == LUA_TSTRING ? lua_tolstring(L, -1, &sl) : "";
    int ok = sl > 3 && strncmp(s, "sm_", 3) == 0;
    size_t j = 3;
    while (ok && j < sl && s[j] >= '0' && s[j] <= '9') j++;
    ok =
        ok && j > 3 && (j == sl || (j + 1 == sl && s[j] >= 'a' && s[j] <= 'z'));
    if (!ok) {
      char shown[64];
      if (type != LUA_TSTRING)
        return fail(S, w.line, w.ctx,
                    "archs[%d] must be a string like \"sm_90\", got %s", i,
                    lua_typename(L, type));
      return fail(S, w.line, w.ctx,
                  "archs[%d] = '%s' is not a CUDA arch; write it "
                  "like \"sm_80\", \"sm_90\" or \"sm_90a\"",
                  i, echo(s, sl, shown, sizeof shown));
    }
    if (len + sl + 2 > sizeof o->archs)
      return fail(S, w.line, w.ctx,
                  "archs: too many archs (%zu characters at most)",
                  sizeof o->archs - 1);
    len += (size_t)snprintf(o->archs + len, sizeof o->archs - len, "%s%s",
                            len ? "," : "", s);
    lua_pop(L, 1);
  }
  lua_pop(L, 1); /* the list, or nil when absent */
  return TQ_OK;
}

static tq_status read_backends(loader *S, lua_State *L, int fam, int line) {
  static const char *const c_keys[] = {"cflags", NULL};
  static const char *const cuda_keys[] = {"archs", NULL};
  static const char *const sg_keys[] = {"subgroups", NULL};
  static const char *const *const keys[TQG_BACKEND_COUNT] = {c_keys, cuda_keys,
                                                             sg_keys, sg_keys};
  tqg_spec *spec = S->spec;
  where w = {line, "family: backends"};
  for (int b = 0; b < TQG_BACKEND_COUNT; b++) spec->backend[b].subgroups = -1;
  int type = rawfield(L, fam, "backends");
  if (type == LUA_TNIL) {
    spec->backend[TQG_BACKEND_C].enabled = 1;
    lua_pop(L, 1);
    return TQ_OK;
  }
  if (type != LUA_TTABLE)
    return fail(S, line, "family",
                "backends must be a table { c = { }, cuda = { }, ... }, got %s",
                lua_typename(L, type));
  int t = lua_gettop(L);
  if (check_keys(S, L, t, w, backend_names, "backend")) return S->status;
  int any = 0;
  for (int b = 0; b < TQG_BACKEND_COUNT; b++) {
    tqg_backend_options *o = &spec->backend[b];
    char ctx[48];
    snprintf(ctx, sizeof ctx, "family: backends.%s", backend_names[b]);
    where bw = {line, ctx};
    type = rawfield(L, t, backend_names[b]);
    if (type == LUA_TNIL) {
      lua_pop(L, 1);
      continue;
    }
    if (type != LUA_TTABLE)
      return fail(S, line, ctx,
                  "must be a table of options ({ } for the defaults), got %s",
                  lua_typename(L, type));
    if (check_keys(S, L, -1, bw, keys[b], "key")) return S->status;
    if (b == TQG_BACKEND_C) {
      if (get_string(S, L, -1, "cflags", bw, 0, o->cflags, sizeof o->cflags))
        return S->status;
      for (const char *c = o->cflags; *c; c++)
        if (!flag_char_ok(*c))
          return fail(S, line, ctx,
                      "cflags: character '%c' is not allowed; allowed: "
                      "letters, digits, space and - _ = . , + / :",
                      *c);
    } else if (b == TQG_BACKEND_CUDA) {
      if (read_cuda_archs(S, L, -1, bw, o)) return S->status;
    } else {
      int sg = -1;
      if (get_bool(S, L, -1, "subgroups", bw, &sg)) return S->status;
      o->subgroups = sg;
    }
    o->enabled = any = 1;
    lua_pop(L, 1);
  }
  if (!any)
    return fail(S, line, "family",
                "backends is empty; enable at least one of c, "
                "cuda, vulkan, wgsl");
  lua_pop(L, 1);
  return TQ_OK;
}

static tq_status read_entries(loader *S, lua_State *L, int fam, where w,
                              const char *key, int kind, int max) {
  int n;
  if (get_list(S, L, fam, key, w, max, &n)) return S->status;
  if (n < 0)
    return fail(S, w.line, w.ctx, "missing key '%s' (a list of %s { ... })",
                key, constructor_names[kind]);
  if (kind == K_QUANT) {
    S->quants = calloc((size_t)n, sizeof *S->quants);
    if (!S->quants) return fail(S, w.line, w.ctx, "out of memory");
  }
  int top = lua_gettop(L);
  for (int i = 1; i <= n; i++) {
    int type = lua_rawgeti(L, -1, i);
    int line = tagged_line(L, -1, kind);
    if (!line)
      return fail(S, w.line, w.ctx, "%s[%d] is %s, not a %s { ... }", key, i,
                  type == LUA_TTABLE ? "a plain table" : lua_typename(L, type),
                  constructor_names[kind]);
    if ((kind == K_MODEL ? read_model : read_quant)(S, L, lua_gettop(L), line))
      return S->status;
    lua_settop(L, top);
  }
  lua_pop(L, 1);
  return TQ_OK;
}

static const char *const family_keys[] = {
    "name", "models", "quant", "dtypes", "layouts", "backends", NULL};

static tq_status read_family(loader *S, lua_State *L, int fam) {
  tqg_spec *spec = S->spec;
  fam = lua_absindex(L, fam);
  int line = tagged_line(L, fam, K_FAMILY);
  if (!line) {
    int type = lua_type(L, fam);
    return fail(S, S->src_lines, "spec",
                "must end with 'return family { ... }', but it returned %s",
                type == LUA_TNONE || type == LUA_TNIL ? "nothing"
                : type == LUA_TTABLE                  ? "a plain table"
                                                      : lua_typename(L, type));
  }
  where w = {line, "family"};
  S->family_line = line;
  if (check_keys(S, L, fam, w, family_keys, "key") ||
      get_string(S, L, fam, "name", w, 1, spec->family, sizeof spec->family))
    return S->status;
  for (const char *c = spec->family; *c; c++)
    if (!flag_char_ok(*c) || strchr(" =,+/:", *c))
      return fail(S, line, "family",
                  "name '%s': allowed characters are letters, "
                  "digits, '-', '_' and '.'",
                  spec->family);
  int max_models = (int)(sizeof spec->models / sizeof spec->models[0]);
  if (read_entries(S, L, fam, w, "models", K_MODEL, max_models) ||
      read_entries(S, L, fam, w, "quant", K_QUANT, MAX_QUANTS) ||
      read_dtypes(S, L, fam, w) || read_layouts(S, L, fam, w) ||
      read_backends(S, L, fam, line))
    return S->status;
  /* The checks that need a model and a quant together. */
  for (int m = 0; m < spec->n_models; m++)
    for (int q = 0; q < S->n_quants; q++) {
      tq_variant v = S->quants[q].v;
      char msg[256];
      v.head_dim = spec->models[m].head_dim;
      v.group = spec->models[m].q_heads / spec->models[m].kv_heads;
      if (tqg_variant_check(&v, msg, sizeof msg))
        return fail(S, S->quants[q].line, "quant", "%s (with model '%s')", msg,
                    spec->models[m].name);
    }
  return TQ_OK;
}

/* ---- running the spec under lua_pcall ------------------------------------ */

static int run_protected(lua_State *L) {
  loader *S = lua_touserdata(L, 1);
  lua_settop(L, 0);
  open_sandbox(L);

  /* Lua writes a long path as "...tail" in its messages; learn its spelling
   * from an empty chunk so those messages can be given the full path. */
  lua_pushfstring(L, "@%s", S->path);
  const char *chunkname = lua_tostring(L, 1);
  lua_Debug ar;
  if (luaL_loadbufferx(L, "", 0, chunkname, "t") == LUA_OK &&
      lua_getinfo(L, ">S", &ar))
    snprintf(S->short_src, sizeof S->short_src, "%s", ar.short_src);
  lua_settop(L, 1);

  if (S->srclen > 0 && S->src[0] == LUA_SIGNATURE[0]) {
    fail(S, 0, "spec",
         "is a precompiled (binary) Lua chunk; a spec must be Lua "
         "source text");
    return 0;
  }
  if (luaL_loadbufferx(L, S->src, S->srclen, chunkname, "t") != LUA_OK)
    return lua_error(L);
  lua_call(L, 0, 1);
  if (S->instructions > TQG_SPEC_INSTRUCTION_LIMIT) { /* caught by a pcall */
    S->status = TQ_ERR_INVALID;
    budget_message(S, S->last_line, S->err, S->errn);
    return 0;
  }
  read_family(S, L, -1);
  return 0;
}

/* A Lua error message, with Lua's abbreviated file name replaced by the
 * full path, or the path put in front when the message has no position. */
static void lua_message(loader *S, lua_State *L, int status) {
  size_t len = 0;
  const char *msg =
      lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
  size_t ss = strlen(S->short_src), ps = strlen(S->path);
  S->status = TQ_ERR_INVALID;
  if (!S->err || !S->errn) return;
  if (status == LUA_ERRMEM || (msg && strcmp(msg, "not enough memory") == 0)) {
    if (S->last_line)
      snprintf(S->err, S->errn, "%s:%d: spec exceeded the %u MiB memory limit",
               S->path, S->last_line, TQG_SPEC_MEMORY_LIMIT >> 20);
    else
      snprintf(S->err, S->errn, "%s: spec exceeded the %u MiB memory limit",
               S->path, TQG_SPEC_MEMORY_LIMIT >> 20);
  } else if (!msg) {
    snprintf(S->err, S->errn,
             "%s: spec raised an error that is not a string (%s)", S->path,
             luaL_typename(L, -1));
  } else if (ss && strncmp(msg, S->short_src, ss) == 0 && msg[ss] == ':') {
    snprintf(S->err, S->errn, "%s%s", S->path, msg + ss);
  } else if (strncmp(msg, S->path, ps) == 0 && msg[ps] == ':') {
    snprintf(S->err, S->errn, "%s", msg);
  } else {
    snprintf(S->err, S->errn, "%s: %s", S->path, msg);
  }
}

/* ---- stage 3: expansion ----------------------------------------------------
 */

static int same_quant(const tq_variant *a, const tq_variant *b) {
  return a->key_bits == b->key_bits && a->value_bits == b->value_bits &&
         a->value_method == b->value_method &&
         a->value_group == b->value_group &&
         a->outlier_count == b->outlier_count &&
         a->outlier_bits == b->outlier_bits && a->qjl == b->qjl &&
         a->norm_correction == b->norm_correction && a->seed == b->seed;
}

/* models x quants x dtypes x layouts, nested in that order.  Duplicates are
 * dropped per dimension first (same head_dim and group, same quant), which
 * keeps the first-seen order of the full product and bounds its size. */
static tq_status expand(loader *S) {
  tqg_spec *spec = S->spec;
  int shape[32][2], n_shapes = 0, *quant = NULL, n_q = 0;
  for (int m = 0; m < spec->n_models; m++) {
    int hd = spec->models[m].head_dim,
        g = spec->models[m].q_heads / spec->models[m].kv_heads, seen = 0;
    for (int i = 0; i < n_shapes; i++)
      seen |= shape[i][0] == hd && shape[i][1] == g;
    if (!seen) shape[n_shapes][0] = hd, shape[n_shapes++][1] = g;
  }
  quant = malloc((size_t)S->n_quants * sizeof *quant);
  if (!quant) return fail(S, 0, "spec", "out of memory");
  for (int q = 0; q < S->n_quants; q++) {
    int seen = 0;
    for (int i = 0; i < n_q; i++)
      seen |= same_quant(&S->quants[quant[i]].v, &S->quants[q].v);
    if (!seen) quant[n_q++] = q;
  }
  long long total = (long long)n_shapes * n_q * S->n_dtypes * S->n_layouts;
  if (total > TQG_SPEC_MAX_VARIANTS) {
    free(quant);
    return fail(S, S->family_line, "family",
                "expands to %lld variants; at most %d (split the "
                "spec into several families)",
                total, TQG_SPEC_MAX_VARIANTS);
  }
  spec->variants = calloc((size_t)total, sizeof *spec->variants);
  if (!spec->variants) {
    free(quant);
    return fail(S, 0, "spec", "out of memory");
  }
  for (int s = 0; s < n_shapes; s++)
    for (int q = 0; q < n_q; q++)
      for (int d = 0; d < S->n_dtypes; d++)
        for (int l = 0; l < S->n_layouts; l++) {
          tq_variant v = S->quants[quant[q]].v;
          char name[160], other[160], msg[256];
          v.head_dim = shape[s][0];
          v.group = shape[s][1];
          v.dtype = S->dtypes[d];
          v.layout = S->layouts[l].layout;
          v.block_size = S->layouts[l].block_size;
          if (tqg_variant_check(&v, msg, sizeof msg)) {
            fail(S, S->quants[quant[q]].line, "quant", "%s", msg);
            free(quant);
            return S->status;
          }
          /* The canonical name is the identity: never two with one name. */
          tqg_variant_name(&v, name, sizeof name);
          int dup = 0;
          for (int i = 0; i < spec->n_variants && !dup; i++) {
            tqg_variant_name(&spec->variants[i], other, sizeof other);
            dup = strcmp(name, other) == 0;
          }
          if (!dup) spec->variants[spec->n_variants++] = v;
        }
  free(quant);
  return TQ_OK;
}

/* ---- the entry points ------------------------------------------------------
 */

static tq_status read_file(loader *S, char **out) {
  FILE *f = fopen(S->path, "rb");
  *out = NULL;
  if (!f) {
    snprintf(S->err, S->errn, "%s: cannot open the spec: %s", S->path,
             strerror(errno));
    return S->status = TQ_ERR_IO;
  }
  char *buf = malloc(MAX_FILE_BYTES + 1);
  size_t n = buf ? fread(buf, 1, MAX_FILE_BYTES + 1, f) : 0;
  int bad = !buf || ferror(f);
  int e = errno;
  fclose(f);
  if (bad) {
    free(buf);
    snprintf(S->err, S->errn, "%s: cannot read the spec: %s", S->path,
             buf ? strerror(e) : "out of memory");
    return S->status = buf ? TQ_ERR_IO : TQ_ERR_NOMEM;
  }
  if (n > MAX_FILE_BYTES) {
    free(buf);
    return fail(S, 0, "spec", "file is larger than %u bytes", MAX_FILE_BYTES);
  }
  buf[n] = 0;
  *out = buf;
  S->src = buf;
  S->srclen = n;
  if (n >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0)
    S->src += 3, S->srclen -= 3;
  S->src_lines = 1;
  for (size_t i = 0; i < S->srclen; i++) S->src_lines += S->src[i] == '\n';
  if (S->srclen && S->src[S->srclen - 1] == '\n') S->src_lines--;
  return TQ_OK;
}

tq_status tqg_spec_load(const char *path, tqg_spec *spec, char *err,
                        size_t errn) {
  static char scratch[1];
  loader S;
  char *buf = NULL;
  memset(spec, 0, sizeof *spec);
  memset(&S, 0, sizeof S);
  S.limit = TQG_SPEC_MEMORY_LIMIT;
  S.path = path ? path : "(null)";
  S.spec = spec;
  S.err = err && errn ? err : scratch;
  S.errn = err && errn ? errn : sizeof scratch;
  S.err[0] = 0;
  if (!path || strlen(path) >= sizeof spec->file)
    return fail(&S, 0, "spec", "path is missing or longer than %zu characters",
                sizeof spec->file - 1);
  snprintf(spec->file, sizeof spec->file, "%s", path);
  if (read_file(&S, &buf)) goto done;

  lua_State *L = lua_newstate(spec_alloc, &S);
  if (!L) {
    snprintf(S.err, S.errn, "%s: cannot create a Lua state", S.path);
    S.status = TQ_ERR_NOMEM;
    goto done;
  }
  lua_sethook(L, budget_hook, LUA_MASKCOUNT, HOOK_EVERY);
  lua_pushcfunction(L, run_protected);
  lua_pushlightuserdata(L, &S);
  int status = lua_pcall(L, 1, 0, 0);
  if (status != LUA_OK && S.status == TQ_OK) lua_message(&S, L, status);
  lua_close(L);
  if (S.status == TQ_OK) expand(&S);

done:
  free(buf);
  free(S.quants);
  if (S.status != TQ_OK) {
    tqg_spec_free(spec);
    snprintf(spec->file, sizeof spec->file, "%s", path ? path : "");
  }
  return S.status;
}

void tqg_spec_free(tqg_spec *spec) {
  if (!spec) return;
  free(spec->variants);
  memset(spec, 0, sizeof *spec);
}
