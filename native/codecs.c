/*
 * livestick's native codec addon (Node-API 8): libzstd, liblzma and libdeflate's decompressor linked
 * in statically, for the platforms we ship a prebuilt binary for (see native/README.md). Each mirrors
 * its wasm build (../wasm/), so both write the same bytes:
 * - zstd: one frame per SquashFS block via ZSTD_compressCCtx, and a single-pass decoder into a
 *   caller-sized buffer (the entry points of wasm/zstd/shim.c, with per-thread contexts);
 * - xz and MicroLZMA (EROFS): wasm/xz/shim.c itself, compiled in (it keeps no state);
 * - gzip blocks (zlib streams): libdeflate's compressor (the entry point of wasm/deflate/shim.c,
 *   with per-thread compressors, one per level) and its decompressor.
 * Buffers come from JavaScript, so nothing is allocated per call; each thread (Node-API environment)
 * owns its contexts.
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#define ZSTD_STATIC_LINKING_ONLY
#include "zstd.h"
#include "zstd_errors.h"
#include "lzma.h"
#include "libdeflate.h"

/* wasm/xz/shim.c, compiled in with the rest. */
int32_t ls_xz_encode(uint32_t preset, uint32_t dict_size, uint32_t bcj_id, const uint8_t *in, size_t in_size, uint8_t *out, size_t out_cap);
int32_t ls_xz_decode(const uint8_t *in, size_t in_size, uint8_t *out, size_t out_cap, uint32_t memlimit);
int32_t ls_microlzma_decode(const uint8_t *in, size_t in_size, uint8_t *out, size_t out_size, uint32_t dict_size, uint32_t exact);
int32_t ls_microlzma_encode(uint32_t preset, uint32_t dict_size, const uint8_t *in, size_t in_size, uint8_t *out, size_t out_cap, uint32_t *out_len);

typedef struct {
  ZSTD_CCtx *cctx;
  ZSTD_DCtx *dctx;
  struct libdeflate_decompressor *inflater;
  struct libdeflate_compressor *deflaters[13];
} thread_contexts;

static void free_contexts(napi_env env, void *data, void *hint) {
  thread_contexts *t = data;
  (void)env;
  (void)hint;
  ZSTD_freeCCtx(t->cctx);
  ZSTD_freeDCtx(t->dctx);
  if (t->inflater != NULL) libdeflate_free_decompressor(t->inflater);
  for (int i = 0; i < 13; i++)
    if (t->deflaters[i] != NULL) libdeflate_free_compressor(t->deflaters[i]);
  free(t);
}

static thread_contexts *contexts(napi_env env) {
  void *t = NULL;
  napi_get_instance_data(env, &t);
  return t;
}

/* A Uint8Array argument's bytes; 0 (with a TypeError pending) when it is anything else. */
static int bytes_of(napi_env env, napi_value v, void **data, size_t *length) {
  napi_typedarray_type type;
  napi_value buffer;
  size_t offset;
  if (napi_get_typedarray_info(env, v, &type, length, data, &buffer, &offset) != napi_ok || type != napi_uint8_array) {
    napi_throw_type_error(env, NULL, "expected a Uint8Array");
    return 0;
  }
  return 1;
}

static napi_value int32_value(napi_env env, int32_t n) {
  napi_value r;
  napi_create_int32(env, n, &r);
  return r;
}

/* Reads `count` uint32 arguments, then `arrays` Uint8Array arguments; 0 (with a TypeError pending) on a mismatch. */
static int args_of(napi_env env, napi_callback_info info, const char *usage, uint32_t *ints, size_t count, void **data, size_t *lengths, size_t arrays) {
  napi_value argv[8];
  size_t argc = 8;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != count + arrays) {
    napi_throw_type_error(env, NULL, usage);
    return 0;
  }
  for (size_t i = 0; i < count; i++) {
    if (napi_get_value_uint32(env, argv[i], &ints[i]) != napi_ok) {
      napi_throw_type_error(env, NULL, usage);
      return 0;
    }
  }
  for (size_t i = 0; i < arrays; i++) {
    if (!bytes_of(env, argv[count + i], &data[i], &lengths[i])) return 0;
  }
  return 1;
}

static int32_t failure(size_t code) { return -(int32_t)ZSTD_getErrorCode(code); }

/* zstdEncode(level, src, dst): the frame length, 0 when it does not fit in dst, or -(error code). */
static napi_value zstd_encode(napi_env env, napi_callback_info info) {
  uint32_t level[1];
  void *p[2];
  size_t len[2];
  if (!args_of(env, info, "zstdEncode(level, src, dst)", level, 1, p, len, 2)) return NULL;
  thread_contexts *t = contexts(env);
  if (t->cctx == NULL && (t->cctx = ZSTD_createCCtx()) == NULL) return int32_value(env, -(int32_t)ZSTD_error_memory_allocation);
  size_t n = ZSTD_compressCCtx(t->cctx, p[1], len[1], p[0], len[0], (int)level[0]);
  if (ZSTD_isError(n)) return int32_value(env, ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall ? 0 : failure(n));
  return int32_value(env, (int32_t)n);
}

/* zstdDecode(src, dst): the content length, or -(error code); src must be exactly one frame. */
static napi_value zstd_decode(napi_env env, napi_callback_info info) {
  uint32_t none[1];
  void *p[2];
  size_t len[2];
  if (!args_of(env, info, "zstdDecode(src, dst)", none, 0, p, len, 2)) return NULL;
  thread_contexts *t = contexts(env);
  if (t->dctx == NULL && (t->dctx = ZSTD_createDCtx()) == NULL) return int32_value(env, -(int32_t)ZSTD_error_memory_allocation);
  size_t frame = ZSTD_findFrameCompressedSize(p[0], len[0]);
  if (ZSTD_isError(frame)) return int32_value(env, failure(frame));
  if (frame != len[0]) return int32_value(env, -(int32_t)ZSTD_error_srcSize_wrong);
  size_t n = ZSTD_decompressDCtx(t->dctx, p[1], len[1], p[0], len[0]);
  if (ZSTD_isError(n)) return int32_value(env, failure(n));
  return int32_value(env, (int32_t)n);
}

/* zstdError(code): the text for an error code returned above. */
static napi_value zstd_error(napi_env env, napi_callback_info info) {
  uint32_t code[1];
  napi_value r;
  if (!args_of(env, info, "zstdError(code)", code, 1, NULL, NULL, 0)) return NULL;
  napi_create_string_utf8(env, ZSTD_getErrorString((ZSTD_ErrorCode)code[0]), NAPI_AUTO_LENGTH, &r);
  return r;
}

/* zstdVersion(): ZSTD_versionNumber(), e.g. 10506; JavaScript uses the addon only when it matches the wasm build. */
static napi_value zstd_version(napi_env env, napi_callback_info info) {
  (void)info;
  return int32_value(env, (int32_t)ZSTD_versionNumber());
}

/* xzEncode(preset, dictSize, bcjId, src, dst): as ls_xz_encode. */
static napi_value xz_encode(napi_env env, napi_callback_info info) {
  uint32_t n[3];
  void *p[2];
  size_t len[2];
  if (!args_of(env, info, "xzEncode(preset, dictSize, bcjId, src, dst)", n, 3, p, len, 2)) return NULL;
  return int32_value(env, ls_xz_encode(n[0], n[1], n[2], p[0], len[0], p[1], len[1]));
}

/* xzDecode(memlimit, src, dst): as ls_xz_decode. */
static napi_value xz_decode(napi_env env, napi_callback_info info) {
  uint32_t n[1];
  void *p[2];
  size_t len[2];
  if (!args_of(env, info, "xzDecode(memlimit, src, dst)", n, 1, p, len, 2)) return NULL;
  return int32_value(env, ls_xz_decode(p[0], len[0], p[1], len[1], n[0]));
}

/* microLzmaDecode(dictSize, exact, src, dst): as ls_microlzma_decode, filling all of dst. */
static napi_value microlzma_decode(napi_env env, napi_callback_info info) {
  uint32_t n[2];
  void *p[2];
  size_t len[2];
  if (!args_of(env, info, "microLzmaDecode(dictSize, exact, src, dst)", n, 2, p, len, 2)) return NULL;
  return int32_value(env, ls_microlzma_decode(p[0], len[0], p[1], len[1], n[0], n[1]));
}

/* microLzmaEncode(preset, dictSize, src, dst, outLen): as ls_microlzma_encode; the output length goes to outLen (4 bytes, little-endian). */
static napi_value microlzma_encode(napi_env env, napi_callback_info info) {
  uint32_t n[2];
  void *p[3];
  size_t len[3];
  if (!args_of(env, info, "microLzmaEncode(preset, dictSize, src, dst, outLen)", n, 2, p, len, 3)) return NULL;
  if (len[2] < 4) {
    napi_throw_type_error(env, NULL, "microLzmaEncode: outLen must hold 4 bytes");
    return NULL;
  }
  uint32_t out_len = 0;
  int32_t r = ls_microlzma_encode(n[0], n[1], p[0], len[0], p[1], len[1], &out_len);
  uint8_t *o = p[2];
  o[0] = (uint8_t)out_len;
  o[1] = (uint8_t)(out_len >> 8);
  o[2] = (uint8_t)(out_len >> 16);
  o[3] = (uint8_t)(out_len >> 24);
  return int32_value(env, r);
}

/* xzVersion(): lzma_version_number(), e.g. 50080032. */
static napi_value xz_version(napi_env env, napi_callback_info info) {
  (void)info;
  return int32_value(env, (int32_t)lzma_version_number());
}

/*
 * zlibDecode(src, dst): the length of the zlib stream's content (bytes after the stream are ignored,
 * as zlib's inflate does), or -(libdeflate_result): 1 bad data, 3 more output than dst holds, 4 out of memory.
 */
static napi_value zlib_decode(napi_env env, napi_callback_info info) {
  uint32_t none[1];
  void *p[2];
  size_t len[2], in_used = 0, out_n = 0;
  if (!args_of(env, info, "zlibDecode(src, dst)", none, 0, p, len, 2)) return NULL;
  thread_contexts *t = contexts(env);
  if (t->inflater == NULL && (t->inflater = libdeflate_alloc_decompressor()) == NULL) return int32_value(env, -4);
  enum libdeflate_result r = libdeflate_zlib_decompress_ex(t->inflater, p[0], len[0], p[1], len[1], &in_used, &out_n);
  if (r != LIBDEFLATE_SUCCESS) return int32_value(env, -(int32_t)r);
  return int32_value(env, (int32_t)out_n);
}

/* zlibEncode(level, src, dst): the zlib stream's length, 0 when it does not fit in dst, or -1 for a level outside 0..12 or no memory. */
static napi_value zlib_encode(napi_env env, napi_callback_info info) {
  uint32_t level[1];
  void *p[2];
  size_t len[2];
  if (!args_of(env, info, "zlibEncode(level, src, dst)", level, 1, p, len, 2)) return NULL;
  if (level[0] > 12) return int32_value(env, -1);
  thread_contexts *t = contexts(env);
  struct libdeflate_compressor **c = &t->deflaters[level[0]];
  if (*c == NULL && (*c = libdeflate_alloc_compressor((int)level[0])) == NULL) return int32_value(env, -1);
  return int32_value(env, (int32_t)libdeflate_zlib_compress(*c, p[0], len[0], p[1], len[1]));
}

/* deflateVersion(): LIBDEFLATE_VERSION_MAJOR * 1000 + LIBDEFLATE_VERSION_MINOR, e.g. 1025. */
static napi_value deflate_version(napi_env env, napi_callback_info info) {
  (void)info;
  return int32_value(env, LIBDEFLATE_VERSION_MAJOR * 1000 + LIBDEFLATE_VERSION_MINOR);
}

static void export_function(napi_env env, napi_value exports, const char *name, napi_callback f) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, f, NULL, &fn);
  napi_set_named_property(env, exports, name, fn);
}

NAPI_MODULE_INIT() {
  thread_contexts *t = calloc(1, sizeof *t);
  if (t == NULL || napi_set_instance_data(env, t, free_contexts, NULL) != napi_ok) {
    free(t);
    napi_throw_error(env, NULL, "livestick native codecs: out of memory");
    return NULL;
  }
  export_function(env, exports, "zstdEncode", zstd_encode);
  export_function(env, exports, "zstdDecode", zstd_decode);
  export_function(env, exports, "zstdError", zstd_error);
  export_function(env, exports, "zstdVersion", zstd_version);
  export_function(env, exports, "xzEncode", xz_encode);
  export_function(env, exports, "xzDecode", xz_decode);
  export_function(env, exports, "xzVersion", xz_version);
  export_function(env, exports, "microLzmaDecode", microlzma_decode);
  export_function(env, exports, "microLzmaEncode", microlzma_encode);
  export_function(env, exports, "zlibDecode", zlib_decode);
  export_function(env, exports, "zlibEncode", zlib_encode);
  export_function(env, exports, "deflateVersion", deflate_version);
  return exports;
}
