/**
 * `livestick inspect TARGET`: what a stick holds, in one view — the partition table, each volume's
 * signatures and filesystem (label, UUID, size, free space), and the live systems found on them with
 * their base and persistence. TARGET is a mounted directory, an image file made with dd, or a device.
 *
 * Design notes
 * - The stick is read, never written: every Disk is opened read-only.
 * - Volumes: each partition of the table, or the whole Disk when it has none (a superfloppy, or an
 *   image of one filesystem). Filesystems are opened through fs/registry.ts, so a filesystem added
 *   there is found here without a change; a volume whose filesystem is not supported yet is listed
 *   with its signatures.
 * - Volumes and live systems come from the one model of ops/live (openStick, findLive): each
 *   system's scheme, lower stack (top first) and persistence with its volume, upper, work and what
 *   booting does with it; persistence that belongs to no base is listed as unmatched with the reason.
 */
import { LivestickError } from '../errors.ts';
import { findLive, withStick, type LiveSystem as ModelSystem, type Persistence, type Volume } from './live/index.ts';

export interface InspectedVolume {
  /** "disk" (no partition table), "partition N", "directory", or a nested volume's id (`p1:/LiveOS/overlay-…`). */
  readonly id: string;
  readonly startBytes: number;
  readonly sizeBytes: number;
  readonly partitionType?: string;
  readonly partitionName?: string;
  readonly signatures: string[];
  readonly filesystem?: { type: string; label?: string; uuid?: string; totalBytes: number; freeBytes: number };
  readonly encrypted?: string;
  readonly problem?: string;
}

export interface LivePersistence {
  readonly path: string;
  readonly kind: 'dm-snapshot file' | 'overlayfs directory' | 'overlay image' | 'persistence volume' | 'bind directory' | 'link directory';
  readonly bytes: number;
  readonly scheme: string;
  /** The volume holding the upper (a nested volume for an image file). */
  readonly volume: string;
  readonly upper: string;
  readonly work?: string;
  readonly target: string;
  readonly encrypted: boolean;
  readonly legacy: boolean;
  readonly present: boolean;
  readonly mode: string;
  /** The base it belongs to ("VOLUME:PATH" of its top lower), or absent when unmatched. */
  readonly belongsTo?: string;
  readonly unmatched?: string;
}

export interface LiveSystem {
  readonly volume: string;
  readonly layout: 'dracut LiveOS' | 'Debian live-boot' | 'Ubuntu casper';
  readonly scheme: string;
  readonly base: { path: string; format: string; rootImage?: string; flat?: boolean; bytes: number };
  /** The lower stack, top first. */
  readonly lowers: { volume: string; path: string; format: string; inner?: string }[];
  readonly persistence: LivePersistence[];
  readonly home?: { path: string; bytes: number; encrypted: boolean; volume: string; mode: string };
  readonly notes: string[];
}

export interface InspectReport {
  readonly target: string;
  readonly source: { kind: 'directory' | 'image' | 'device'; sizeBytes: number; sectorSize?: number; model?: string; mounted?: string[] };
  readonly partitionTable: { kind: string; sectorSize: number; partitions: number; problems: string[] } | null;
  readonly volumes: InspectedVolume[];
  readonly liveSystems: LiveSystem[];
  /** Persistence found on the stick that belongs to no base here. */
  readonly unmatchedPersistence: LivePersistence[];
  readonly warnings: string[];
}

const LAYOUTS: Record<string, LiveSystem['layout']> = { dracut: 'dracut LiveOS', casper: 'Ubuntu casper', 'live-boot': 'Debian live-boot' };

/** The id inspect has always shown: "partition N" for a partition, the model's id otherwise. */
function volumeId(v: Volume): string {
  if (v.parent) return `${volumeId(v.parent)}:${v.path}`;
  return v.partition ? `partition ${v.partition.index}` : v.id;
}

async function fileBytes(v: Volume, path: string): Promise<number> {
  const fs = await v.tryOpen();
  if (!fs) return 0;
  try {
    return (await fs.stat(path)).size;
  } catch (err) {
    if (err instanceof LivestickError) return 0;
    throw err;
  }
}

async function persistenceOf(p: Persistence, system: ModelSystem | undefined): Promise<LivePersistence> {
  const nested = p.volume.parent !== undefined;
  const kind: LivePersistence['kind'] =
    p.kind === 'dm-snapshot' ? 'dm-snapshot file' : p.kind === 'bind' ? 'bind directory' : p.kind === 'link' ? 'link directory' : nested ? 'overlay image' : p.upper.startsWith('/LiveOS/') ? 'overlayfs directory' : 'persistence volume';
  const path = p.cow ? p.cow.path : nested ? p.volume.path! : p.upper;
  const bytes = p.cow ? await fileBytes(p.cow.volume, p.cow.path) : nested ? p.volume.sizeBytes : 0;
  const top = system?.lowers[0];
  return {
    path,
    kind,
    bytes,
    scheme: p.scheme,
    volume: volumeId(p.volume),
    upper: p.upper,
    ...(p.work ? { work: p.work } : {}),
    target: p.target,
    encrypted: p.encrypted,
    legacy: p.legacy,
    present: p.present,
    mode: p.mode,
    ...(top ? { belongsTo: `${volumeId(top.volume)}:${top.path}` } : {}),
    ...(p.unmatched ? { unmatched: p.unmatched } : {}),
  };
}

async function systemOf(s: ModelSystem): Promise<LiveSystem> {
  const top = s.lowers[0]!;
  const inner = s.scheme.replace(/^ventoy-/, '');
  return {
    volume: volumeId(s.volume),
    layout: LAYOUTS[inner]!,
    scheme: s.scheme,
    base: { path: top.path, format: top.format, ...(top.inner ? { rootImage: top.inner.path } : {}), ...(inner === 'dracut' ? { flat: s.flat } : {}), bytes: await fileBytes(top.volume, top.path) },
    lowers: s.lowers.map((l) => ({ volume: volumeId(l.volume), path: l.path, format: l.format, ...(l.inner ? { inner: l.inner.path } : {}) })),
    persistence: await Promise.all(s.persistence.map((p) => persistenceOf(p, s))),
    ...(s.home ? { home: { path: s.home.path, bytes: s.home.path === '/' ? s.home.volume.sizeBytes : await fileBytes(s.home.volume, s.home.path), encrypted: s.home.encrypted, volume: volumeId(s.home.volume), mode: s.home.mode } } : {}),
    notes: [...s.notes],
  };
}

async function volumeOf(v: Volume, source: string): Promise<InspectedVolume> {
  const fs = await v.tryOpen();
  const signatures = source === 'directory' ? [] : await v.signatures();
  let filesystem: InspectedVolume['filesystem'];
  if (fs) {
    const space = await fs.space();
    filesystem = { type: fs.type, ...(fs.label ? { label: fs.label } : {}), ...(fs.uuid ? { uuid: fs.uuid } : {}), ...space };
  }
  return {
    id: volumeId(v),
    startBytes: v.startBytes,
    sizeBytes: source === 'directory' ? (filesystem?.totalBytes ?? 0) : v.sizeBytes,
    ...(v.partition ? { partitionType: v.partition.typeName } : {}),
    ...(v.partition?.name ? { partitionName: v.partition.name } : {}),
    signatures,
    ...(filesystem ? { filesystem } : {}),
    ...(v.encryption ? { encrypted: `LUKS${v.encryption.version}` } : {}),
    ...(v.problem && !fs ? { problem: v.problem } : {}),
  };
}

export async function inspectMedium(target: string): Promise<InspectReport> {
  return withStick(target, {}, async (stick) => {
    const found = await findLive(stick);
    const volumes: InspectedVolume[] = [];
    for (const v of stick.volumes) volumes.push(await volumeOf(v, stick.source));
    const warnings = [...found.problems];
    for (const v of volumes) if (v.problem && !v.encrypted) warnings.push(`${v.id}: ${v.problem}`);
    const table = stick.table;
    const device = stick.device;
    return {
      target,
      source: {
        kind: stick.source,
        sizeBytes: stick.source === 'directory' ? (volumes[0]?.sizeBytes ?? 0) : stick.sizeBytes,
        ...(device ? { sectorSize: device.logicalSectorSize, ...(device.model ? { model: device.model } : {}), mounted: device.mounted.map((m) => `${m.device} at ${m.mountPoint}`) } : {}),
      },
      partitionTable: table ? { kind: table.kind, sectorSize: table.sectorSize, partitions: table.partitions.length, problems: [...table.problems] } : null,
      volumes,
      liveSystems: await Promise.all(found.systems.map(systemOf)),
      unmatchedPersistence: await Promise.all(found.unmatched.map((p) => persistenceOf(p, undefined))),
      warnings,
    };
  });
}
