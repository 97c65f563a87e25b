/**
 * Block compression off the main thread: a fixed pool of worker_threads, each holding its own codec.
 * Jobs resolve to the compressed bytes, or undefined when compression does not shrink the block
 * (the writer then stores it uncompressed). With 0 threads, compression runs inline.
 * A compressed block is a pure function of its bytes and the codec settings, so where it ran does
 * not change the image.
 */
import { Worker } from 'node:worker_threads';
import { compressorForWriting } from './index.ts';
import type { Compressor, CompressorName, CompressorSettings } from './types.ts';

export interface BlockCompressor {
  compress(data: Uint8Array): Promise<Uint8Array | undefined>;
  close(): Promise<void>;
}

export async function createBlockCompressor(name: CompressorName, settings: CompressorSettings, blockSize: number, threads: number): Promise<BlockCompressor> {
  if (threads <= 0) {
    const comp: Compressor = await compressorForWriting(name, settings, blockSize);
    return {
      async compress(data) {
        const out = comp.compress(data);
        return out.byteLength < data.byteLength ? out : undefined;
      },
      async close() {},
    };
  }
  // Running from TypeScript sources (tests, tsx): the worker needs the same loader.
  const fromSource = import.meta.url.endsWith('.ts');
  const url = new URL(fromSource ? './worker.ts' : './worker.js', import.meta.url);
  const entry = fromSource
    ? new URL(`data:text/javascript,${encodeURIComponent(`const { register } = await import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}); register(); await import(${JSON.stringify(url.href)});`)}`)
    : url;
  // Blocks go to the workers from the start: messages posted before a worker is up wait for it.
  // Compressing on this thread instead (while workers start) looked free but starved them: this
  // thread then feeds the queue and writes the image only between blocks.
  const workers: Worker[] = [];
  const load: number[] = [];
  const pending = new Map<number, { resolve: (v: Uint8Array | undefined) => void; reject: (e: unknown) => void; worker: number }>();
  let nextId = 0;
  let failure: unknown;
  const fail = (err: unknown): void => {
    failure ??= err;
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  };
  for (let w = 0; w < threads; w++) {
    const worker = new Worker(entry, { workerData: { name, settings, blockSize } });
    workers.push(worker);
    load.push(0);
    worker.on('error', fail);
    worker.on('message', (msg: { id: number; out: Uint8Array | null }) => {
      const job = pending.get(msg.id);
      if (job === undefined) return;
      pending.delete(msg.id);
      load[job.worker] = (load[job.worker] as number) - 1;
      job.resolve(msg.out === null || msg.out === undefined ? undefined : new Uint8Array(msg.out.buffer, msg.out.byteOffset, msg.out.byteLength));
    });
  }
  return {
    compress(data) {
      if (failure !== undefined) return Promise.reject(failure);
      let w = 0;
      for (let i = 1; i < workers.length; i++) if ((load[i] as number) < (load[w] as number)) w = i;
      const id = nextId++;
      load[w] = (load[w] as number) + 1;
      // Workers need their own copy of the bytes (the caller may reuse its buffer).
      const copy = data.slice();
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject, worker: w });
        (workers[w] as Worker).postMessage({ id, data: copy }, [copy.buffer as ArrayBuffer]);
      });
    },
    async close() {
      await Promise.all(workers.map((w) => w.terminate()));
    },
  };
}
