/*
 * livestick's entry points into liblz4 for SquashFS lz4 blocks: raw LZ4 blocks (no frame), as
 * squashfs-tools writes them, and a bounded safe decoder.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include "lz4.h"
#include "lz4hc.h"

__attribute__((export_name("ls_alloc"))) void *ls_alloc(size_t n) { return malloc(n); }
__attribute__((export_name("ls_free"))) void ls_free(void *p) { free(p); }

/* Returns the block length, or 0 when it does not fit in out_cap. hc: LZ4HC at its highest level. */
__attribute__((export_name("ls_lz4_encode")))
int32_t ls_lz4_encode(int32_t hc, const char *in, int32_t in_size, char *out, int32_t out_cap) {
  if (hc) return LZ4_compress_HC(in, out, in_size, out_cap, LZ4HC_CLEVEL_MAX);
  return LZ4_compress_default(in, out, in_size, out_cap);
}

/* Returns the content length, or a negative number for a malformed block or output over out_cap. */
__attribute__((export_name("ls_lz4_decode")))
int32_t ls_lz4_decode(const char *in, int32_t in_size, char *out, int32_t out_cap) {
  return LZ4_decompress_safe(in, out, in_size, out_cap);
}
