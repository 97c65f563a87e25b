/** Worker thread: codes blocks in the direction and with the codec named in workerData; replies in any order with the job id. */
import { parentPort, workerData } from 'node:worker_threads';
import { CorruptImageError } from '../../../errors.ts';
import { compressorForImage, compressorForWriting } from './index.ts';
import type { Compressor, CompressorName, CompressorSettings } from './types.ts';

export type WorkerSetup =
  | { direction: 'compress'; name: CompressorName; settings: CompressorSettings; blockSize: number }
  | { direction: 'decompress'; id: number; options: Uint8Array | undefined; blockSize: number };
export interface WorkerJob {
  id: number;
  data: Uint8Array;
  maxSize: number;
}
/** out: the result, or null for a block that compression did not shrink (or on error). */
export interface WorkerReply {
  id: number;
  out: Uint8Array | null;
  error?: { field: string; message: string };
}

const setup = workerData as WorkerSetup | undefined;
if (setup !== undefined && parentPort !== null) {
  const port = parentPort;
  const comp: Compressor = setup.direction === 'compress' ? await compressorForWriting(setup.name, setup.settings, setup.blockSize) : compressorForImage(setup.id, setup.options, setup.blockSize);
  const send = (id: number, out: Uint8Array): void => {
    const copy = out.byteOffset === 0 && out.byteLength === out.buffer.byteLength ? out : out.slice();
    port.postMessage({ id, out: copy } satisfies WorkerReply, [copy.buffer as ArrayBuffer]);
  };
  port.on('message', (job: WorkerJob) => {
    if (setup.direction === 'compress') {
      const out = comp.compress(job.data);
      if (out.byteLength < job.data.byteLength) send(job.id, out);
      else port.postMessage({ id: job.id, out: null } satisfies WorkerReply);
      return;
    }
    try {
      send(job.id, comp.decompress(job.data, job.maxSize));
    } catch (err) {
      const field = err instanceof CorruptImageError ? err.field : `${comp.name} block`;
      const prefix = err instanceof CorruptImageError ? `${err.format}: ${err.field}: ` : '';
      const text = (err as Error).message;
      const message = text.startsWith(prefix) ? text.slice(prefix.length) : text;
      port.postMessage({ id: job.id, out: null, error: { field, message } } satisfies WorkerReply);
    }
  });
}
