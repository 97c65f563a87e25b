/**
 * Block coding off the main thread: a fixed pool of worker_threads, each holding its own codec.
 * - Compression jobs resolve to the compressed bytes, or undefined when compression does not shrink
 *   the block (the writer then stores it uncompressed). A compressed block is a pure function of its
 *   bytes and the codec settings, so where it ran does not change the image. `compressInPlace` hands
 *   the block's buffer to the worker and gets the same memory back holding the compressed bytes (or
 *   the block as it was): the writer's block buffers circulate instead of being allocated, copied and
 *   answered with a third buffer for every block.
 * - Decompression jobs (readers, for read-ahead) resolve to the block, or reject with the codec's
 *   CorruptImageError message.
 * - Extraction jobs read a run of a file's stored blocks from the image's descriptor, decode them
 *   and write them into the output file's descriptor (worker.ts); they resolve when the run is written.
 * - EROFS segment jobs (createSegmentCompressor) take a file segment and resolve to its pclusters.
 * Jobs go to the least-loaded worker from the start: messages posted before a worker is up wait for
 * it. (Coding on the main thread while workers started looked free but starved them: the main thread
 * then fed the queue and did I/O only between blocks.) With 0 threads, compression runs inline.
 * A worker takes ~0.15 s to start (a Node environment, then its modules), which is a tenth of a whole
 * extraction: prestartWorkers lets a caller start them before it even loads the layers it needs, and
 * the next pools adopt them, sending their setup as the first message.
 */
import { workerEntryUrl } from '../../../io/worker-url.ts';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { CorruptImageError } from '../../../errors.ts';
import { compressorForWriting } from './index.ts';
import type { Compressor, CompressorName, CompressorSettings } from './types.ts';
import { compressSegment, type CompressedSegment, type ZipConfig } from '../../erofs/compress.ts';
import type { ActiveSetup, ExtractBlock, WorkerError, WorkerJob, WorkerReply, WorkerSetup } from './worker.ts';

export interface InPlaceResult {
  /** The buffer handed in (the same memory, transferred back from a worker). */
  readonly buffer: Uint8Array;
  /** The compressed length at the start of `buffer`, or undefined when compression did not shrink the block (then `buffer` holds it unchanged). */
  readonly compressed: number | undefined;
}

export interface BlockCompressor {
  compress(data: Uint8Array): Promise<Uint8Array | undefined>;
  /** Compresses the first `length` bytes of `buffer` (a whole ArrayBuffer's view), which is taken over until the result hands it back. */
  compressInPlace(buffer: Uint8Array, length: number): Promise<InPlaceResult>;
  close(): Promise<void>;
}

export interface BlockDecompressor {
  /** Takes ownership of `data` (its buffer is transferred to a worker). */
  decompress(data: Uint8Array, maxSize: number): Promise<Uint8Array>;
  close(): Promise<void>;
}

interface Pool {
  /** `owned`: the caller hands `data` over (it is transferred, not copied). */
  run(job: Omit<WorkerJob, 'id'>, owned: boolean): Promise<WorkerReply>;
  close(): Promise<void>;
}

function workerEntry(): URL {
  return workerEntryUrl(import.meta.url, 'worker');
}

/** Extraction's default worker count for an image of `bytes`: all cores over 8 MiB, else none (all on the caller's thread). */
export function defaultExtractThreads(bytes: number): number {
  return bytes > 8 << 20 ? availableParallelism() : 0;
}

/** Started workers waiting for a pool (they do not keep the process alive), and what became of any that failed meanwhile. */
const spares: Worker[] = [];
const spareFailures = new WeakMap<Worker, unknown>();

/** Starts `n` workers now, before their work is known; the next pools adopt them. */
export function prestartWorkers(n: number): void {
  for (let i = 0; i < n; i++) {
    const worker = new Worker(workerEntry(), { workerData: { direction: 'deferred' } satisfies WorkerSetup });
    worker.unref();
    worker.on('error', (err) => spareFailures.set(worker, err));
    worker.on('exit', (code) => spareFailures.set(worker, spareFailures.get(worker) ?? new Error(`worker thread exited (${code}) before it had work`)));
    spares.push(worker);
  }
}

/** How many started workers wait for a pool. */
export function spareWorkers(): number {
  return spares.length;
}

/** Ends the workers no pool adopted (tests; a process exits without waiting for them anyway). */
export async function stopSpareWorkers(): Promise<void> {
  await Promise.all(spares.splice(0).map((w) => w.terminate()));
}

function startPool(setup: ActiveSetup, threads: number): Pool {
  const workers: Worker[] = [];
  const load: number[] = [];
  const pending = new Map<number, { resolve: (v: WorkerReply) => void; reject: (e: unknown) => void; worker: number }>();
  let nextId = 0;
  let failure: unknown;
  const fail = (err: unknown): void => {
    failure ??= err;
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  };
  for (let w = 0; w < threads; w++) {
    const spare = spares.shift();
    const worker = spare ?? new Worker(workerEntry(), { workerData: setup });
    workers.push(worker);
    load.push(0);
    worker.on('error', fail);
    if (spare !== undefined) {
      spare.ref();
      if (spareFailures.has(spare)) fail(spareFailures.get(spare));
      else spare.postMessage(setup);
    }
    worker.on('message', (reply: WorkerReply) => {
      const job = pending.get(reply.id);
      if (job === undefined) return;
      pending.delete(reply.id);
      load[job.worker] = (load[job.worker] as number) - 1;
      job.resolve(reply);
    });
  }
  return {
    run(job, owned) {
      if (failure !== undefined) return Promise.reject(failure);
      let w = 0;
      for (let i = 1; i < workers.length; i++) if ((load[i] as number) < (load[w] as number)) w = i;
      const id = nextId++;
      load[w] = (load[w] as number) + 1;
      // Workers need their own copy of the bytes, unless the caller handed them over whole.
      const whole = job.data.byteOffset === 0 && job.data.byteLength === job.data.buffer.byteLength;
      const data = owned && whole ? job.data : job.data.slice();
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject, worker: w });
        (workers[w] as Worker).postMessage({ ...job, id, data }, [data.buffer as ArrayBuffer]);
      });
    },
    async close() {
      await Promise.all(workers.map((w) => w.terminate()));
    },
  };
}

const asBytes = (out: Uint8Array): Uint8Array => new Uint8Array(out.buffer, out.byteOffset, out.byteLength);

export async function createBlockCompressor(name: CompressorName, settings: CompressorSettings, blockSize: number, threads: number): Promise<BlockCompressor> {
  if (threads <= 0) {
    const comp: Compressor = await compressorForWriting(name, settings, blockSize);
    return {
      async compress(data) {
        const out = comp.compress(data);
        return out.byteLength < data.byteLength ? out : undefined;
      },
      async compressInPlace(buffer, length) {
        const out = comp.compress(buffer.subarray(0, length));
        if (out.byteLength >= length) return { buffer, compressed: undefined };
        buffer.set(out, 0);
        return { buffer, compressed: out.byteLength };
      },
      async close() {},
    };
  }
  const pool = startPool({ direction: 'compress', name, settings, blockSize }, threads);
  return {
    async compress(data) {
      const reply = await pool.run({ data, maxSize: data.byteLength }, false);
      return reply.out === null ? undefined : asBytes(reply.out);
    },
    async compressInPlace(buffer, length) {
      if (buffer.byteOffset !== 0 || buffer.byteLength !== buffer.buffer.byteLength) throw new RangeError('compressInPlace needs a whole buffer');
      const reply = await pool.run({ data: buffer, maxSize: length, inPlace: length }, true);
      if (reply.out === null) throw new Error('compression worker: the block buffer did not come back');
      const back = asBytes(reply.out);
      return { buffer: back, compressed: reply.length !== undefined && reply.length >= 0 ? reply.length : undefined };
    },
    close: () => pool.close(),
  };
}

export interface SegmentCompressor {
  /** Takes ownership of `data` (a whole buffer is transferred to a worker). */
  compress(data: Uint8Array, fragment: boolean): Promise<CompressedSegment>;
  close(): Promise<void>;
}

/** EROFS file segments into pclusters (erofs/compress.ts) on `threads` workers; 0 runs them inline. */
export function createSegmentCompressor(config: ZipConfig, threads: number): SegmentCompressor {
  if (threads <= 0) return { compress: async (data, fragment) => compressSegment(data, config, fragment), close: async () => {} };
  const pool = startPool({ direction: 'erofs', config }, threads);
  return {
    async compress(data, fragment) {
      const reply = await pool.run({ data, maxSize: 0, fragment }, true);
      if (reply.error !== undefined) throw Object.assign(new Error(reply.error.message), { code: reply.error.code });
      return { extents: reply.extents ?? [], data: asBytes(reply.out as Uint8Array), tail: reply.tail ?? 0 };
    },
    close: () => pool.close(),
  };
}

/** Decompression for an image's codec (id and stored options) on `threads` workers. */
export function createBlockDecompressor(id: number, options: Uint8Array | undefined, blockSize: number, threads: number): BlockDecompressor {
  const pool = startPool({ direction: 'decompress', id, options, blockSize }, Math.max(1, threads));
  return {
    async decompress(data, maxSize) {
      const reply = await pool.run({ data, maxSize }, true);
      if (reply.error !== undefined) throw workerError(reply.error);
      return asBytes(reply.out as Uint8Array);
    },
    close: () => pool.close(),
  };
}

function workerError(e: WorkerError): Error {
  if (e.corrupt) return new CorruptImageError('squashfs', e.field, e.message, e.offset);
  return Object.assign(new Error(e.message), { code: e.code });
}

export interface BlockExtractor {
  /**
   * Reads, decodes and writes `blocks` of one file on a worker: from the image's descriptor to the
   * output descriptor. Neither may be closed before the promise settles.
   */
  extract(imageFd: number, outFd: number, blocks: ExtractBlock[]): Promise<void>;
  close(): Promise<void>;
}

/** File-data extraction for an image's codec on `threads` workers (see worker.ts). */
export function createBlockExtractor(id: number, options: Uint8Array | undefined, blockSize: number, threads: number): BlockExtractor {
  const pool = startPool({ direction: 'extract', id, options, blockSize }, Math.max(1, threads));
  const none = new Uint8Array(0);
  return {
    async extract(imageFd, outFd, blocks) {
      const reply = await pool.run({ data: none, maxSize: 0, extract: { imageFd, outFd, blocks } }, false);
      if (reply.error !== undefined) throw workerError(reply.error);
    },
    close: () => pool.close(),
  };
}
