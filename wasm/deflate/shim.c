/*
 * livestick's entry point into libdeflate for SquashFS gzip blocks: one zlib stream (RFC 1950) per
 * block, with a compressor reused per thread for each level. Decoding stays with node:zlib.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include "libdeflate.h"

static struct libdeflate_compressor *compressors[13];

__attribute__((export_name("ls_alloc"))) void *ls_alloc(size_t n) { return malloc(n); }
__attribute__((export_name("ls_free"))) void ls_free(void *p) { free(p); }

/* Returns the stream length, 0 when it does not fit in out_cap, or -1 for a bad level or no memory. */
__attribute__((export_name("ls_zlib_encode")))
int32_t ls_zlib_encode(int32_t level, const void *in, size_t in_size, void *out, size_t out_cap) {
  if (level < 0 || level > 12) return -1;
  if (compressors[level] == NULL && (compressors[level] = libdeflate_alloc_compressor(level)) == NULL) return -1;
  return (int32_t)libdeflate_zlib_compress(compressors[level], in, in_size, out, out_cap);
}
