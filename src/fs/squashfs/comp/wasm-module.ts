/**
 * Codec libraries compiled to wasm32 (see wasm/README.md): each is embedded as base64, instantiated
 * once per thread on first use, imports nothing, and exports ls_alloc/ls_free next to its entry
 * points. Calls are synchronous, so a thread never re-enters an instance.
 */

/** The slice of the WebAssembly global used here (the project's lib settings do not declare it). */
interface Wasm {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: unknown };
}
const wasmApi = (globalThis as unknown as { WebAssembly: Wasm }).WebAssembly;

export interface CodecExports {
  memory: { buffer: ArrayBuffer };
  ls_alloc(n: number): number;
  ls_free(p: number): void;
}

/** A getter for this thread's instance of an embedded module. */
export function embeddedModule<T extends CodecExports>(base64: string): () => T {
  let instance: T | undefined;
  return () => {
    instance ??= new wasmApi.Instance(new wasmApi.Module(Buffer.from(base64, 'base64')), {}).exports as T;
    return instance;
  };
}

/**
 * Copies `input` into the instance, allocates `outCap` bytes for output, runs `f` with both
 * addresses, and frees them whatever happens. `outOfMemory` builds the error for a failed allocation.
 */
export function withBuffers<T, X extends CodecExports>(x: X, input: Uint8Array, outCap: number, outOfMemory: () => Error, f: (inPtr: number, outPtr: number) => T): T {
  const inPtr = x.ls_alloc(Math.max(1, input.byteLength));
  const outPtr = x.ls_alloc(Math.max(1, outCap));
  try {
    if (inPtr === 0 || outPtr === 0) throw outOfMemory();
    new Uint8Array(x.memory.buffer, inPtr, input.byteLength).set(input);
    return f(inPtr, outPtr);
  } finally {
    x.ls_free(outPtr);
    x.ls_free(inPtr);
  }
}

/** A copy of `length` bytes at `ptr` (the instance's memory may move on its next call). */
export function copyOut(x: CodecExports, ptr: number, length: number): Uint8Array {
  return new Uint8Array(x.memory.buffer, ptr, length).slice();
}

const scratch = new WeakMap<CodecExports, { ptr: number; size: number }>();

/**
 * Like withBuffers, but the output goes to a region kept per instance and `f` gets its address:
 * callers return a view of it (transientView), valid until the next call into the instance.
 */
function withScratchOutput<T, X extends CodecExports>(x: X, input: Uint8Array, outCap: number, outOfMemory: () => Error, f: (inPtr: number, outPtr: number) => T): T {
  let region = scratch.get(x);
  if (region === undefined || region.size < outCap) {
    if (region !== undefined) x.ls_free(region.ptr);
    const ptr = x.ls_alloc(Math.max(1, outCap));
    if (ptr === 0) {
      scratch.delete(x);
      throw outOfMemory();
    }
    region = { ptr, size: outCap };
    scratch.set(x, region);
  }
  const inPtr = x.ls_alloc(Math.max(1, input.byteLength));
  try {
    if (inPtr === 0) throw outOfMemory();
    new Uint8Array(x.memory.buffer, inPtr, input.byteLength).set(input);
    return f(inPtr, region.ptr);
  } finally {
    x.ls_free(inPtr);
  }
}

/** A view of `length` bytes at `ptr`, valid until the next call into the instance. */
function transientView(x: CodecExports, ptr: number, length: number): Uint8Array {
  return new Uint8Array(x.memory.buffer, ptr, length);
}

/**
 * Runs a decoder entry point, `run(inPtr, outPtr)` returning the output length or a negative error
 * (turned into an Error by `fail`), on `src` with room for `maxSize` bytes out. The result is a copy,
 * or with `transient` a view of the instance's scratch memory, valid until its next call.
 */
export function decodeWith(x: CodecExports, src: Uint8Array, maxSize: number, transient: boolean, outOfMemory: () => Error, run: (inPtr: number, outPtr: number) => number, fail: (n: number) => Error): Uint8Array {
  const body = (inPtr: number, outPtr: number): Uint8Array => {
    const n = run(inPtr, outPtr);
    if (n < 0) throw fail(n);
    return transient ? transientView(x, outPtr, n) : copyOut(x, outPtr, n);
  };
  return transient ? withScratchOutput(x, src, maxSize, outOfMemory, body) : withBuffers(x, src, maxSize, outOfMemory, body);
}

/**
 * Runs an encoder entry point, `run(inPtr, outPtr, cap)` returning the output length, 0 when it does
 * not fit, or a negative error (turned into an Error by `fail`), on `src` with room for `cap` bytes
 * (by default one byte less than `src`): undefined means the block does not shrink and is stored as it is.
 */
export function encodeWith(x: CodecExports, src: Uint8Array, outOfMemory: () => Error, run: (inPtr: number, outPtr: number, cap: number) => number, fail: (n: number) => Error, cap = src.byteLength - 1, transient = false): Uint8Array | undefined {
  if (src.byteLength <= 1) return undefined;
  const body = (inPtr: number, outPtr: number): Uint8Array | undefined => {
    const n = run(inPtr, outPtr, cap);
    if (n < 0) throw fail(n);
    if (n === 0 || n >= src.byteLength) return undefined;
    return transient ? transientView(x, outPtr, n) : copyOut(x, outPtr, n);
  };
  return transient ? withScratchOutput(x, src, cap, outOfMemory, body) : withBuffers(x, src, cap, outOfMemory, body);
}
