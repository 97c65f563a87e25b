/**
 * Overlay user stories: create, inspect, write through, export, bind and reset a dm-snapshot overlay
 * file against a base image. Everything here opens files, checks the base binding, and hands the
 * block work to xform/dmsnap.
 */
import { rename, rm } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { hostSpace, newImageVerdict } from '../io/host.ts';
import { AlreadyExistsError, LivestickError, UsageError } from '../errors.ts';
import { formatSize, isAllZero } from '../io/bytes.ts';
import { FileDisk, readAt, type Disk } from '../io/disk.ts';
import {
  BaseMismatchError,
  ExceptionStore,
  SECTOR,
  SnapshotDisk,
  SnapshotInvalidError,
  fingerprintBase,
  sameBase,
  type BaseBinding,
  type OverflowMode,
} from '../xform/dmsnap/index.ts';

export interface OverlayInfo {
  overlay: string;
  state: 'new' | 'active' | 'invalid';
  valid: boolean;
  chunkSize: number;
  chunkSectors: number;
  exceptionsPerArea: number;
  exceptions: number;
  allocatedSectors: number;
  totalSectors: number;
  metadataSectors: number;
  /** What `dmsetup status` prints after the target name, e.g. "24/8192 16" (or "Invalid"). */
  dmStatus: string;
  sizeBytes: number;
  usedBytes: number;
  freeBytes: number;
  /** allocated / total, 0..1 */
  fill: number;
  bound: boolean;
  binding: { baseSize: number; label: string; fingerprint: string } | null;
  bindingProblem?: string;
  baseMatches?: boolean;
  warnings?: string[];
}

export async function bindingFor(base: Disk, label: string): Promise<BaseBinding> {
  const fp = await fingerprintBase(base);
  return { baseSize: base.size, fingerprintKind: fp.kind, fingerprint: fp.digest, label };
}

export function describeStore(path: string, store: ExceptionStore): OverlayInfo {
  const st = store.status();
  const g = store.geometry;
  const b = store.binding;
  const valid = store.valid;
  return {
    overlay: path,
    state: store.state,
    valid,
    chunkSize: g.chunkBytes,
    chunkSectors: g.chunkSectors,
    exceptionsPerArea: g.exceptionsPerArea,
    exceptions: store.exceptionCount,
    allocatedSectors: st.allocatedSectors,
    totalSectors: st.totalSectors,
    metadataSectors: st.metadataSectors,
    dmStatus: valid ? `${st.allocatedSectors}/${st.totalSectors} ${st.metadataSectors}` : 'Invalid',
    sizeBytes: store.disk.size,
    usedBytes: st.allocatedSectors * SECTOR,
    freeBytes: valid ? store.freeChunks() * g.chunkBytes : 0,
    fill: st.totalSectors > 0 ? st.allocatedSectors / st.totalSectors : 1,
    bound: b.state === 'bound',
    binding: b.state === 'bound' ? { baseSize: b.binding.baseSize, label: b.binding.label, fingerprint: Buffer.from(b.binding.fingerprint).toString('hex') } : null,
    ...(b.state === 'damaged' ? { bindingProblem: b.reason } : {}),
  };
}

function attachFile(err: unknown, path: string): unknown {
  return err instanceof LivestickError ? err.withFile(path) : err;
}

async function withFile<T>(path: string, readOnly: boolean, fn: (disk: FileDisk) => Promise<T>): Promise<T> {
  const disk = await FileDisk.open(path, { readOnly });
  try {
    return await fn(disk);
  } catch (err) {
    throw attachFile(err, path);
  } finally {
    await disk.close();
  }
}

export interface CreateOverlayOptions {
  size: number;
  chunkSectors: number;
  basePath?: string;
}

/** Creates a new overlay file (never overwrites): written beside the target, then renamed into place. */
export async function createOverlay(path: string, options: CreateOverlayOptions): Promise<OverlayInfo> {
  if (options.size % SECTOR !== 0) throw new UsageError(`overlay size ${options.size} is not a multiple of ${SECTOR} bytes`);
  let binding: BaseBinding | undefined;
  if (options.basePath !== undefined) {
    const basePath = options.basePath;
    binding = await withFile(basePath, true, (base) => bindingFor(base, basename(basePath)));
  }
  const verdict = newImageVerdict(await hostSpace(dirname(path)), options.size, 'the overlay', formatSize);
  if (verdict.refuse) throw new UsageError(verdict.refuse);
  const tmp = `${path}.livestick-new`;
  try {
    await FileDisk.open(path, { readOnly: true }).then(
      async (d) => {
        await d.close();
        throw new AlreadyExistsError('the overlay file already exists (use `overlay reset` to empty it)', { file: path });
      },
      (err: unknown) => {
        if ((err as { code?: string }).code !== 'NOT_FOUND') throw err;
      },
    );
    await rm(tmp, { force: true });
    const disk = await FileDisk.open(tmp, { create: { size: options.size } });
    let info: OverlayInfo;
    try {
      const store = await ExceptionStore.format(disk, options.chunkSectors, binding);
      info = describeStore(path, store);
    } catch (err) {
      if (err instanceof RangeError) throw new UsageError(err.message);
      throw err;
    } finally {
      await disk.close();
    }
    await rename(tmp, path);
    const out = options.basePath === undefined ? info : { ...info, baseMatches: true };
    return verdict.warning ? { ...out, warnings: [verdict.warning] } : out;
  } finally {
    await rm(tmp, { force: true });
  }
}

export interface InspectOptions {
  basePath?: string;
  chunkSectorsIfNew?: number;
}

export async function inspectOverlay(path: string, options: InspectOptions = {}): Promise<OverlayInfo> {
  return withFile(path, true, async (disk) => {
    const store = await ExceptionStore.open(disk, { chunkSectorsIfNew: options.chunkSectorsIfNew });
    const info = describeStore(path, store);
    const b = store.binding;
    if (options.basePath !== undefined && b.state === 'bound') {
      const basePath = options.basePath;
      const actual = await withFile(basePath, true, (base) => bindingFor(base, basename(basePath)));
      info.baseMatches = sameBase(b.binding, actual);
    }
    return info;
  });
}

export interface CombinedOptions {
  writable: boolean;
  mode?: OverflowMode;
  /** Use the overlay even if it is bound to a different base. */
  force?: boolean;
  chunkSectorsIfNew?: number;
}

export interface Combined {
  device: SnapshotDisk;
  store: ExceptionStore;
  info: () => OverlayInfo;
  close(): Promise<void>;
}

/** Opens base + overlay as the combined device, refusing a foreign overlay unless forced. */
export async function openCombined(basePath: string, overlayPath: string, options: CombinedOptions): Promise<Combined> {
  const base = await FileDisk.open(basePath, { readOnly: true });
  let overlay: FileDisk | undefined;
  try {
    overlay = await FileDisk.open(overlayPath, { readOnly: !options.writable });
    const store = await ExceptionStore.open(overlay, { chunkSectorsIfNew: options.chunkSectorsIfNew });
    if (!store.valid) {
      throw new SnapshotInvalidError('the overlay is an invalidated snapshot (it overflowed or had an I/O error); its data cannot be used. `livestick overlay reset` empties it', { file: overlayPath });
    }
    const b = store.binding;
    if (b.state === 'bound' && !options.force) {
      const actual = await bindingFor(base, basename(basePath));
      if (!sameBase(b.binding, actual)) {
        throw new BaseMismatchError(
          `the overlay belongs to a different base (bound to "${b.binding.label}", ${b.binding.baseSize} bytes; given ${basePath}, ${base.size} bytes). Using it would corrupt the filesystem; pass --force only if you know better`,
          { file: overlayPath },
        );
      }
    }
    const device = new SnapshotDisk(base, store, { mode: options.mode ?? 'PO', readOnly: !options.writable });
    const ov = overlay;
    return {
      device,
      store,
      info: () => describeStore(overlayPath, store),
      async close() {
        try {
          await device.close();
        } finally {
          await ov.close();
          await base.close();
        }
      },
    };
  } catch (err) {
    await overlay?.close();
    await base.close();
    throw attachFile(err, overlayPath);
  }
}

const COMMIT_EVERY = 64 * 2 ** 20;

/** Writes a byte stream at `offset` of the combined device (committing every 64 MiB and at the end). */
export async function writeThrough(
  basePath: string,
  overlayPath: string,
  offset: number,
  input: AsyncIterable<Uint8Array>,
  options: Omit<CombinedOptions, 'writable'> & { onProgress?: (bytes: number) => void },
): Promise<{ bytesWritten: number; newChunks: number; overlay: OverlayInfo }> {
  const combined = await openCombined(basePath, overlayPath, { ...options, writable: true });
  const before = combined.store.exceptionCount;
  let written = 0;
  try {
    const dev = combined.device;
    if (offset > dev.size) throw new UsageError(`offset ${offset} is past the end of the device (${dev.size} bytes)`);
    const cb = combined.store.geometry.chunkBytes;
    // Gather input into chunk-aligned pieces so each chunk is written whole when the input covers it.
    let pending: Uint8Array[] = [];
    let pendingLen = 0;
    let sinceCommit = 0;
    const put = async (final: boolean): Promise<void> => {
      const at = offset + written;
      let len = pendingLen;
      if (!final) len -= (at + len) % cb;
      if (len <= 0) return;
      const all = pending.length === 1 ? (pending[0] as Uint8Array) : Buffer.concat(pending, pendingLen);
      if (at + len > dev.size) {
        throw new UsageError(`the input runs past the end of the device (${dev.size} bytes) at offset ${dev.size}; ${written} bytes were written before it`);
      }
      await dev.write(all.subarray(0, len), at);
      written += len;
      sinceCommit += len;
      const rest = all.subarray(len);
      pending = rest.byteLength > 0 ? [rest.slice()] : [];
      pendingLen = rest.byteLength;
      options.onProgress?.(written);
      if (sinceCommit >= COMMIT_EVERY) {
        await dev.flush();
        sinceCommit = 0;
      }
    };
    for await (const piece of input) {
      pending.push(piece);
      pendingLen += piece.byteLength;
      if (pendingLen >= 4 * 2 ** 20) await put(false);
    }
    await put(true);
    await dev.flush();
    return { bytesWritten: written, newChunks: combined.store.exceptionCount - before, overlay: combined.info() };
  } finally {
    await combined.close();
  }
}

/** Writes the whole combined device to a new file (sparse where the device reads as zeros). */
export async function exportCombined(
  basePath: string,
  overlayPath: string,
  outPath: string,
  options: { force?: boolean; chunkSectorsIfNew?: number; onProgress?: (bytes: number, total: number) => void } = {},
): Promise<{ bytes: number; out: string }> {
  const combined = await openCombined(basePath, overlayPath, { writable: false, force: options.force, chunkSectorsIfNew: options.chunkSectorsIfNew });
  const tmp = `${outPath}.livestick-partial`;
  try {
    const dev = combined.device;
    await rm(tmp, { force: true });
    const out = await FileDisk.open(tmp, { create: { size: dev.size } });
    try {
      const piece = 4 * 2 ** 20;
      for (let at = 0; at < dev.size; at += piece) {
        const data = await readAt(dev, at, Math.min(piece, dev.size - at));
        if (!isAllZero(data)) await out.write(data, at);
        options.onProgress?.(at + data.byteLength, dev.size);
      }
      await out.flush();
    } finally {
      await out.close();
    }
    await rename(tmp, outPath);
    return { bytes: dev.size, out: outPath };
  } finally {
    await rm(tmp, { force: true });
    await combined.close();
  }
}

export async function bindOverlay(basePath: string, overlayPath: string, options: { chunkSectorsIfNew?: number } = {}): Promise<OverlayInfo> {
  const binding = await withFile(basePath, true, (base) => bindingFor(base, basename(basePath)));
  return withFile(overlayPath, false, async (disk) => {
    const store = await ExceptionStore.open(disk, { chunkSectorsIfNew: options.chunkSectorsIfNew });
    // Binding a used overlay to a base it does not fit would hide exactly the mistake binding exists to catch.
    store.checkFitsBase(binding.baseSize);
    await store.bind(binding);
    return { ...describeStore(overlayPath, store), baseMatches: true };
  });
}

export interface ResetOptions {
  chunkSectorsIfNew?: number;
  /** Bind the emptied overlay to this base (the medium's current one). */
  binding?: BaseBinding;
  /** Overwrite the chunks that held data with zeros (otherwise the old bytes stay until reused). */
  wipe?: boolean;
}

/**
 * Empties the overlay (crash-safe: the store's reset is one ordered write), then binds it and, with
 * `wipe`, zeroes every chunk that held data, so the old changes cannot be read back from the file.
 */
export async function resetOverlay(overlayPath: string, options: ResetOptions = {}): Promise<OverlayInfo & { wipedBytes: number }> {
  return withFile(overlayPath, false, (disk) => resetStore(disk, overlayPath, options));
}

/** The reset itself, on the overlay file open for writing (`shown` names it in the result). */
export async function resetStore(disk: Disk, shown: string, options: ResetOptions = {}): Promise<OverlayInfo & { wipedBytes: number }> {
  const store = await ExceptionStore.open(disk, { chunkSectorsIfNew: options.chunkSectorsIfNew });
  const usedChunks = store.nextFree;
  await store.reset();
  if (options.binding !== undefined) await store.bind(options.binding);
  let wipedBytes = 0;
  if (options.wipe) {
    const cb = store.geometry.chunkBytes;
    const zeros = new Uint8Array(Math.max(cb, 4 << 20) - (Math.max(cb, 4 << 20) % cb));
    for (let at = 2 * cb; at < Math.min(usedChunks * cb, disk.size); at += zeros.byteLength) {
      const len = Math.min(zeros.byteLength, usedChunks * cb - at, disk.size - at);
      await disk.write(zeros.subarray(0, len), at);
      wipedBytes += len;
    }
    await disk.flush();
  }
  return { ...describeStore(shown, store), ...(options.binding ? { baseMatches: true } : {}), wipedBytes };
}

/** Binds a medium's overlay to the root image its squashfs.img holds now. */
export async function bindMediumOverlay(target: string, options: { overlay?: string; partition?: number; forceDevice?: boolean } = {}): Promise<OverlayInfo> {
  const { locateMedium, openMedium, openMediumFile, withRecoveredMedium } = await import('./medium.ts');
  return withRecoveredMedium(target, { write: true, partition: options.partition, force: options.forceDevice }, async (root) => {
    const located = await locateMedium(root, { overlay: options.overlay });
    if (located.overlayPath === undefined) throw new UsageError(`no overlay file (LiveOS/overlay-LABEL-UUID) in ${root.display(located.liveos)}`);
    const overlayPath = located.overlayPath;
    const shown = root.display(overlayPath);
    const medium = await openMedium(located);
    try {
      const binding = await bindingFor(medium.rootDisk, medium.rootImage);
      const disk = await openMediumFile(root, overlayPath, 'write');
      try {
        const store = await ExceptionStore.open(disk);
        store.checkFitsBase(binding.baseSize);
        await store.bind(binding);
        return { ...describeStore(shown, store), baseMatches: true };
      } catch (err) {
        throw attachFile(err, shown);
      } finally {
        await disk.close();
      }
    } finally {
      await medium.close();
    }
  });
}
