/*
 * livestick's entry points into liblzma: for SquashFS blocks, one .xz stream per block with a CRC32
 * check and LZMA2 (optionally behind one BCJ filter), as squashfs-tools writes them, and a bounded
 * single-call decoder; for EROFS pclusters, MicroLZMA (a raw LZMA stream whose first byte holds the
 * negated properties, no end marker) both ways: the encoder fills a fixed-size output with as much
 * input as fits. Buffers are allocated by the caller through ls_alloc/ls_free.
 */
#include <stdint.h>
#include <stdlib.h>
#include "lzma.h"

__attribute__((export_name("ls_alloc"))) void *ls_alloc(size_t n) { return malloc(n); }
__attribute__((export_name("ls_free"))) void ls_free(void *p) { free(p); }

/* Returns the compressed length, 0 when it does not fit in out_cap, or -(lzma_ret) on error. */
__attribute__((export_name("ls_xz_encode")))
int32_t ls_xz_encode(uint32_t preset, uint32_t dict_size, uint32_t bcj_id, const uint8_t *in, size_t in_size, uint8_t *out, size_t out_cap) {
  lzma_options_lzma opt;
  if (lzma_lzma_preset(&opt, preset)) return -LZMA_OPTIONS_ERROR;
  opt.dict_size = dict_size;
  lzma_filter filters[3];
  int n = 0;
  if (bcj_id != 0) {
    filters[n].id = bcj_id;
    filters[n].options = NULL;
    n++;
  }
  filters[n].id = LZMA_FILTER_LZMA2;
  filters[n].options = &opt;
  n++;
  filters[n].id = LZMA_VLI_UNKNOWN;
  filters[n].options = NULL;
  size_t pos = 0;
  lzma_ret r = lzma_stream_buffer_encode(filters, LZMA_CHECK_CRC32, NULL, in, in_size, out, &pos, out_cap);
  if (r == LZMA_BUF_ERROR) return 0;
  if (r != LZMA_OK) return -(int32_t)r;
  return (int32_t)pos;
}

/* Returns the decompressed length, or -(lzma_ret) on error (LZMA_BUF_ERROR: output over out_cap). */
__attribute__((export_name("ls_xz_decode")))
int32_t ls_xz_decode(const uint8_t *in, size_t in_size, uint8_t *out, size_t out_cap, uint32_t memlimit) {
  uint64_t limit = memlimit;
  size_t in_pos = 0, out_pos = 0;
  lzma_ret r = lzma_stream_buffer_decode(&limit, 0, NULL, in, &in_pos, in_size, out, &out_pos, out_cap);
  if (r != LZMA_OK) return -(int32_t)r;
  if (in_pos != in_size) return -LZMA_DATA_ERROR;
  return (int32_t)out_pos;
}

/*
 * MicroLZMA: decodes the in_size-byte stream into out_size bytes (exactly that many when exact is
 * non-zero, else at most a prefix of that length). Returns out_size, or -(lzma_ret) on error.
 */
__attribute__((export_name("ls_microlzma_decode")))
int32_t ls_microlzma_decode(const uint8_t *in, size_t in_size, uint8_t *out, size_t out_size, uint32_t dict_size, uint32_t exact) {
  lzma_stream strm = LZMA_STREAM_INIT;
  lzma_ret r = lzma_microlzma_decoder(&strm, in_size, out_size, exact != 0, dict_size);
  if (r != LZMA_OK) return -(int32_t)r;
  strm.next_in = in;
  strm.avail_in = in_size;
  strm.next_out = out;
  strm.avail_out = out_size;
  r = lzma_code(&strm, LZMA_FINISH);
  size_t produced = out_size - strm.avail_out;
  lzma_end(&strm);
  if (r != LZMA_STREAM_END) return -(int32_t)(r == LZMA_OK || r == LZMA_BUF_ERROR ? LZMA_DATA_ERROR : r);
  if (produced != out_size) return -LZMA_DATA_ERROR;
  return (int32_t)produced;
}

/*
 * MicroLZMA: encodes as much of in as fits into out_cap bytes (at least 6) at `preset` with
 * `dict_size`. Returns the input bytes consumed, with the output length in *out_len; -(lzma_ret) on error.
 */
__attribute__((export_name("ls_microlzma_encode")))
int32_t ls_microlzma_encode(uint32_t preset, uint32_t dict_size, const uint8_t *in, size_t in_size, uint8_t *out, size_t out_cap, uint32_t *out_len) {
  lzma_options_lzma opt;
  if (lzma_lzma_preset(&opt, preset)) return -LZMA_OPTIONS_ERROR;
  opt.dict_size = dict_size;
  lzma_stream strm = LZMA_STREAM_INIT;
  lzma_ret r = lzma_microlzma_encoder(&strm, &opt);
  if (r != LZMA_OK) return -(int32_t)r;
  strm.next_in = in;
  strm.avail_in = in_size;
  strm.next_out = out;
  strm.avail_out = out_cap;
  r = lzma_code(&strm, LZMA_FINISH);
  size_t consumed = in_size - strm.avail_in;
  *out_len = (uint32_t)(out_cap - strm.avail_out);
  lzma_end(&strm);
  if (r != LZMA_STREAM_END) return -(int32_t)r;
  return (int32_t)consumed;
}
