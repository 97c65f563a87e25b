/**
 * Worker thread: codes blocks in the direction and with the codec named in workerData; replies in
 * any order with the job id. The 'extract' direction reads stored blocks from the image's
 * descriptor, decodes them and writes them at their file positions into the output descriptor
 * (descriptors are shared by all threads of the process). The 'erofs' direction compresses EROFS
 * file segments into pclusters (erofs/compress.ts) and replies with their extents.
 */
import { readSync, writeSync } from 'node:fs';
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { isAllZero } from '../../../io/bytes.ts';
import { CorruptImageError } from '../../../errors.ts';
import { compressorForImage, compressorForWriting } from './index.ts';
import type { Compressor, CompressorName, CompressorSettings } from './types.ts';
import { compressSegment, type ZipConfig } from '../../erofs/compress.ts';

export type WorkerSetup =
  | { direction: 'compress'; name: CompressorName; settings: CompressorSettings; blockSize: number }
  | { direction: 'decompress' | 'extract'; id: number; options: Uint8Array | undefined; blockSize: number }
  /** EROFS file segments into fixed-output pclusters (erofs/compress.ts). */
  | { direction: 'erofs'; config: ZipConfig }
  /** Started ahead of need (pool.ts prestartWorkers): the first message is the real setup. */
  | { direction: 'deferred' };
/** One block of a file for the 'extract' direction: its size word, where it is stored, where it goes. */
export interface ExtractBlock {
  word: number;
  at: number;
  pos: number;
  expect: number;
}
export interface WorkerJob {
  id: number;
  data: Uint8Array;
  maxSize: number;
  /** Compress the first `inPlace` bytes of `data` and send `data` back holding the result. */
  inPlace?: number;
  /** EROFS segments: the file's last, its tail left for the packed inode (fragments). */
  fragment?: boolean;
  extract?: { imageFd: number; outFd: number; blocks: ExtractBlock[] };
}
/** out: the result, or null for a block that compression did not shrink (or on error). */
export interface WorkerReply {
  id: number;
  out: Uint8Array | null;
  /** In-place jobs: the compressed length at the start of `out`, or -1 when `out` holds the block unchanged. */
  length?: number;
  /** EROFS segments: the extents (CompressedSegment.extents) of the pclusters in `out`. */
  extents?: number[];
  tail?: number;
  error?: WorkerError;
}
/** An error crossing back to the main thread: a CorruptImageError's parts, or a system error's code. */
export interface WorkerError {
  corrupt: boolean;
  field: string;
  message: string;
  offset?: number;
  code?: string;
}

function describe(err: unknown, field: string): WorkerError {
  if (err instanceof CorruptImageError) {
    const prefix = `${err.format}: ${err.field}: `;
    const suffix = err.offset === undefined ? '' : ` (at byte ${err.offset})`;
    let message = err.message.startsWith(prefix) ? err.message.slice(prefix.length) : err.message;
    if (suffix !== '' && message.endsWith(suffix)) message = message.slice(0, -suffix.length);
    return { corrupt: true, field: err.field, message, offset: err.offset };
  }
  const e = err as Error & { code?: string };
  return { corrupt: false, field, message: e.message, code: e.code };
}

/** A setup a worker can run with (a deferred worker waits for one). */
export type ActiveSetup = Exclude<WorkerSetup, { direction: 'deferred' }>;

/** The setup, from workerData or (deferred) the first message; later messages wait in `held`. */
async function setupOf(initial: WorkerSetup, port: MessagePort, held: unknown[]): Promise<ActiveSetup> {
  if (initial.direction !== 'deferred') return initial;
  while (held.length === 0) await new Promise((resolve) => port.once('message', resolve));
  return held.shift() as ActiveSetup;
}

if (workerData !== undefined && workerData !== null && parentPort !== null) {
  const port = parentPort;
  // One listener from the start: messages that arrive while the codec loads are held, not dropped.
  const held: unknown[] = [];
  let handle: ((job: WorkerJob) => void) | undefined;
  port.on('message', (m: WorkerJob) => (handle === undefined ? held.push(m) : handle(m)));
  const active = await setupOf(workerData as WorkerSetup, port, held);
  if (active.direction === 'erofs') {
    handle = (job: WorkerJob) => {
      try {
        const r = compressSegment(job.data, active.config, job.fragment === true);
        port.postMessage({ id: job.id, out: r.data, extents: r.extents, tail: r.tail } satisfies WorkerReply, [r.data.buffer as ArrayBuffer]);
      } catch (err) {
        port.postMessage({ id: job.id, out: null, error: describe(err, 'erofs pcluster') } satisfies WorkerReply);
      }
    };
    for (const job of held.splice(0)) handle(job as WorkerJob);
  } else {
    const setup = active;
    const comp: Compressor = setup.direction === 'compress' ? await compressorForWriting(setup.name, setup.settings, setup.blockSize) : await compressorForImage(setup.id, setup.options, setup.blockSize);
    const send = (id: number, out: Uint8Array): void => {
      const copy = out.byteOffset === 0 && out.byteLength === out.buffer.byteLength ? out : out.slice();
      port.postMessage({ id, out: copy } satisfies WorkerReply, [copy.buffer as ArrayBuffer]);
    };
    let stored = new Uint8Array(0);
    const extract = (imageFd: number, outFd: number, blocks: ExtractBlock[]): void => {
      for (const b of blocks) {
        const len = b.word & 0xffffff;
        if (len === 0) continue; // sparse
        if (stored.byteLength < len) stored = new Uint8Array(Math.max(len, setup.blockSize));
        const raw = stored.subarray(0, len);
        if (readSync(imageFd, raw, 0, len, b.at) !== len) throw new CorruptImageError('squashfs', `block at ${b.at}`, 'the image ends inside the block');
        let data: Uint8Array;
        if (b.word & (1 << 24)) data = raw;
        else {
          try {
            // Written out before the codec runs again, so a view of its memory will do.
            data = comp.decompressTransient ? comp.decompressTransient(raw, setup.blockSize) : comp.decompress(raw, setup.blockSize);
          } catch (err) {
            if (err instanceof CorruptImageError) throw new CorruptImageError('squashfs', `block at ${b.at}`, err.message, b.at, { cause: err });
            throw err;
          }
        }
        if (data.byteLength !== b.expect) throw new CorruptImageError('squashfs', 'data block', `block at ${b.at} holds ${data.byteLength} bytes, expected ${b.expect}`, b.at);
        if (isAllZero(data)) continue;
        let done = 0;
        while (done < data.byteLength) done += writeSync(outFd, data, done, data.byteLength - done, b.pos + done);
      }
    };
    handle = (job: WorkerJob) => {
      if (job.extract !== undefined) {
        try {
          extract(job.extract.imageFd, job.extract.outFd, job.extract.blocks);
          port.postMessage({ id: job.id, out: null } satisfies WorkerReply);
        } catch (err) {
          port.postMessage({ id: job.id, out: null, error: describe(err, 'write') } satisfies WorkerReply);
        }
        return;
      }
      if (setup.direction === 'compress' && job.inPlace !== undefined) {
        const n = job.inPlace;
        const out = comp.compressTransient ? comp.compressTransient(job.data.subarray(0, n)) : comp.compress(job.data.subarray(0, n));
        const shrunk = out.byteLength < n;
        if (shrunk) job.data.set(out, 0);
        port.postMessage({ id: job.id, out: job.data, length: shrunk ? out.byteLength : -1 } satisfies WorkerReply, [job.data.buffer as ArrayBuffer]);
        return;
      }
      if (setup.direction === 'compress') {
        const out = comp.compress(job.data);
        if (out.byteLength < job.data.byteLength) send(job.id, out);
        else port.postMessage({ id: job.id, out: null } satisfies WorkerReply);
        return;
      }
      try {
        send(job.id, comp.decompress(job.data, job.maxSize));
      } catch (err) {
        port.postMessage({ id: job.id, out: null, error: describe(err, `${comp.name} block`) } satisfies WorkerReply);
      }
    };
    for (const job of held.splice(0)) handle(job as WorkerJob);
  }
}
