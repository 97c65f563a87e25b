/*
 * livestick's entry points into libzstd for SquashFS blocks: one frame per block at a level, as
 * squashfs-tools writes them (a context reused per thread), and a single-pass decoder into a
 * caller-sized buffer, which bounds both the output and the memory a frame can make us use.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#define ZSTD_STATIC_LINKING_ONLY
#include "zstd.h"
#include "zstd_errors.h"

static ZSTD_CCtx *cctx;
static ZSTD_DCtx *dctx;

__attribute__((export_name("ls_alloc"))) void *ls_alloc(size_t n) { return malloc(n); }
__attribute__((export_name("ls_free"))) void ls_free(void *p) { free(p); }

/* Returns the frame length, 0 when it does not fit in out_cap, or -(error code) on error. */
__attribute__((export_name("ls_zstd_encode")))
int32_t ls_zstd_encode(int32_t level, const void *in, size_t in_size, void *out, size_t out_cap) {
  if (cctx == NULL && (cctx = ZSTD_createCCtx()) == NULL) return -(int32_t)ZSTD_error_memory_allocation;
  /* squashfs-tools calls ZSTD_compressCCtx, and on x86-64 and arm64 (SSE2, NEON) libzstd then uses its
   * row-based match finder for the greedy and lazy strategies once the window exceeds 16 KiB; on a
   * target without 128-bit SIMD, such as wasm32, only above 128 KiB. Pinning the SIMD platforms'
   * choice makes this build write their bytes (and the native addon's, which keeps ZSTD_compressCCtx). */
  ZSTD_compressionParameters cp = ZSTD_getCParams(level, in_size, 0);
  int row = cp.strategy >= ZSTD_greedy && cp.strategy <= ZSTD_lazy2 && cp.windowLog > 14;
  size_t n = ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
  if (!ZSTD_isError(n)) n = ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
  if (!ZSTD_isError(n)) n = ZSTD_CCtx_setParameter(cctx, ZSTD_c_useRowMatchFinder, row ? ZSTD_ps_enable : ZSTD_ps_disable);
  if (!ZSTD_isError(n)) n = ZSTD_compress2(cctx, out, out_cap, in, in_size);
  if (ZSTD_isError(n)) {
    if (ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall) return 0;
    return -(int32_t)ZSTD_getErrorCode(n);
  }
  return (int32_t)n;
}

/* Returns the content length, or -(error code): the input must be exactly one frame. */
__attribute__((export_name("ls_zstd_decode")))
int32_t ls_zstd_decode(const void *in, size_t in_size, void *out, size_t out_cap) {
  if (dctx == NULL && (dctx = ZSTD_createDCtx()) == NULL) return -(int32_t)ZSTD_error_memory_allocation;
  size_t frame = ZSTD_findFrameCompressedSize(in, in_size);
  if (ZSTD_isError(frame)) return -(int32_t)ZSTD_getErrorCode(frame);
  if (frame != in_size) return -(int32_t)ZSTD_error_srcSize_wrong;
  size_t n = ZSTD_decompressDCtx(dctx, out, out_cap, in, in_size);
  if (ZSTD_isError(n)) return -(int32_t)ZSTD_getErrorCode(n);
  return (int32_t)n;
}

/* The text for an error code returned above. */
__attribute__((export_name("ls_zstd_error")))
const char *ls_zstd_error(int32_t code) { return ZSTD_getErrorString((ZSTD_ErrorCode)code); }
