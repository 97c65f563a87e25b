/** Worker thread: compresses blocks with the codec named in workerData; replies in any order with the job id. */
import { parentPort, workerData } from 'node:worker_threads';
import { compressorForWriting } from './index.ts';
import type { CompressorName, CompressorSettings } from './types.ts';

const { name, settings, blockSize } = workerData as { name: CompressorName; settings: CompressorSettings; blockSize: number };
const comp = await compressorForWriting(name, settings, blockSize);
parentPort?.on('message', (msg: { id: number; data: Uint8Array }) => {
  const out = comp.compress(msg.data);
  if (out.byteLength < msg.data.byteLength) {
    const copy = out.byteOffset === 0 && out.byteLength === out.buffer.byteLength ? out : out.slice();
    parentPort?.postMessage({ id: msg.id, out: copy }, [copy.buffer as ArrayBuffer]);
  } else {
    parentPort?.postMessage({ id: msg.id, out: null });
  }
});
