/*
 * livestick's native codec addon (Node-API 8): libzstd linked in statically, for the platforms we
 * ship a prebuilt binary for (see native/README.md). The entry points mirror wasm/zstd/shim.c, so
 * the two builds of the same libzstd version write the same bytes: one frame per SquashFS block
 * via ZSTD_compressCCtx, and a single-pass decoder into a caller-sized buffer. Buffers come from
 * JavaScript, so nothing is allocated per call; each thread (Node-API environment) owns its contexts.
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#define ZSTD_STATIC_LINKING_ONLY
#include "zstd.h"
#include "zstd_errors.h"

typedef struct {
  ZSTD_CCtx *cctx;
  ZSTD_DCtx *dctx;
} thread_contexts;

static void free_contexts(napi_env env, void *data, void *hint) {
  thread_contexts *t = data;
  (void)env;
  (void)hint;
  ZSTD_freeCCtx(t->cctx);
  ZSTD_freeDCtx(t->dctx);
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

static int32_t failure(size_t code) { return -(int32_t)ZSTD_getErrorCode(code); }

/* zstdEncode(level, src, dst): the frame length, 0 when it does not fit in dst, or -(error code). */
static napi_value zstd_encode(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t level;
  void *src, *dst;
  size_t src_n, dst_n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3 || napi_get_value_int32(env, argv[0], &level) != napi_ok) {
    napi_throw_type_error(env, NULL, "zstdEncode(level, src, dst)");
    return NULL;
  }
  if (!bytes_of(env, argv[1], &src, &src_n) || !bytes_of(env, argv[2], &dst, &dst_n)) return NULL;
  thread_contexts *t = contexts(env);
  if (t->cctx == NULL && (t->cctx = ZSTD_createCCtx()) == NULL) return int32_value(env, -(int32_t)ZSTD_error_memory_allocation);
  size_t n = ZSTD_compressCCtx(t->cctx, dst, dst_n, src, src_n, level);
  if (ZSTD_isError(n)) return int32_value(env, ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall ? 0 : failure(n));
  return int32_value(env, (int32_t)n);
}

/* zstdDecode(src, dst): the content length, or -(error code); src must be exactly one frame. */
static napi_value zstd_decode(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  void *src, *dst;
  size_t src_n, dst_n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2) {
    napi_throw_type_error(env, NULL, "zstdDecode(src, dst)");
    return NULL;
  }
  if (!bytes_of(env, argv[0], &src, &src_n) || !bytes_of(env, argv[1], &dst, &dst_n)) return NULL;
  thread_contexts *t = contexts(env);
  if (t->dctx == NULL && (t->dctx = ZSTD_createDCtx()) == NULL) return int32_value(env, -(int32_t)ZSTD_error_memory_allocation);
  size_t frame = ZSTD_findFrameCompressedSize(src, src_n);
  if (ZSTD_isError(frame)) return int32_value(env, failure(frame));
  if (frame != src_n) return int32_value(env, -(int32_t)ZSTD_error_srcSize_wrong);
  size_t n = ZSTD_decompressDCtx(t->dctx, dst, dst_n, src, src_n);
  if (ZSTD_isError(n)) return int32_value(env, failure(n));
  return int32_value(env, (int32_t)n);
}

/* zstdError(code): the text for an error code returned above. */
static napi_value zstd_error(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], r;
  int32_t code;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1 || napi_get_value_int32(env, argv[0], &code) != napi_ok) {
    napi_throw_type_error(env, NULL, "zstdError(code)");
    return NULL;
  }
  napi_create_string_utf8(env, ZSTD_getErrorString((ZSTD_ErrorCode)code), NAPI_AUTO_LENGTH, &r);
  return r;
}

/* zstdVersion(): ZSTD_versionNumber(), e.g. 10506; JavaScript uses the addon only when it matches the wasm build. */
static napi_value zstd_version(napi_env env, napi_callback_info info) {
  (void)info;
  return int32_value(env, (int32_t)ZSTD_versionNumber());
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
  return exports;
}
