/**
 * Which live system and which overlayfs persistence a medium command works on.
 *
 * Design notes
 * - The medium commands (status, merge, reset, overlay bind) serve two engines: dm-snapshot COW files
 *   (ops/medium.ts and the switch) and overlayfs uppers (this folder). `selectOverlayfs` answers
 *   "is this an overlayfs medium?" from the stick's content (ops/live): it returns the system and
 *   its root persistence when the chosen system persists through an overlayfs upper, and undefined
 *   when the medium is a dm-snapshot one (or holds no live system it recognises), so those keep
 *   their own engine and messages.
 * - A stick with several live systems needs `--partition N` (the volume of the base, or of the
 *   upper) to say which one.
 * - Only the root persistence (`/` union) is merged or reset; live-boot's other lines (bind, link,
 *   `/home union`) are reported by status and left alone.
 */
import { LivestickError, UsageError } from '../../errors.ts';
import { findLive, type LiveSystem, type Persistence, type Stick } from '../live/index.ts';
import type { Volume } from '../live/volumes.ts';

export interface SelectOptions {
  partition?: number;
}

export interface OverlayfsChoice {
  readonly system: LiveSystem;
  /** The root upper (target '/'). */
  readonly persistence: Persistence;
  /** Every other persistence of the system (bind/link lines, other unions), for the report. */
  readonly others: readonly Persistence[];
}

function partitionOf(v: Volume | undefined): number | undefined {
  for (let at = v; at !== undefined; at = at.parent) if (at.partition !== undefined) return at.partition.index;
  return undefined;
}

function describe(s: LiveSystem): string {
  return `${s.scheme} on ${s.volume.display} (${s.lowers.map((l) => l.volume.displayPath(l.path)).join(' + ')})`;
}

/** The overlayfs system of the stick, or undefined when it is not an overlayfs medium. */
export async function selectOverlayfs(stick: Stick, options: SelectOptions = {}): Promise<OverlayfsChoice | undefined> {
  const found = await findLive(stick);
  let systems = found.systems.filter((s) => s.persistence.some((p) => p.kind === 'overlayfs' || p.kind === 'dm-snapshot'));
  if (options.partition !== undefined) {
    const n = options.partition;
    systems = systems.filter((s) => partitionOf(s.volume) === n || s.persistence.some((p) => partitionOf(p.volume) === n));
  }
  // A system that persists through a dm-snapshot COW file stays with that engine.
  if (systems.some((s) => s.persistence.some((p) => p.kind === 'dm-snapshot'))) return undefined;
  const candidates = systems.filter((s) => s.persistence.some((p) => p.kind === 'overlayfs' && p.target === '/'));
  if (candidates.length === 0) return undefined;
  if (candidates.length > 1) {
    throw new UsageError(`${stick.target} holds several live systems with overlayfs persistence: ${candidates.map(describe).join('; ')}; choose one with --partition N`);
  }
  const system = candidates[0]!;
  const roots = system.persistence.filter((p) => p.kind === 'overlayfs' && p.target === '/');
  if (roots.length > 1) {
    throw new UsageError(`${describe(system)} has several root uppers (${roots.map((p) => p.volume.displayPath(p.upper)).join(', ')}); choose one with --partition N`);
  }
  const persistence = roots[0]!;
  return { system, persistence, others: system.persistence.filter((p) => p !== persistence) };
}

/**
 * As selectOverlayfs, but a medium whose content the live model cannot read is left to the
 * dm-snapshot engine (which gives its own, older diagnosis) — only a choice the user must make is
 * an error here.
 */
export async function selectOverlayfsOrNone(stick: Stick, partition: number | undefined): Promise<OverlayfsChoice | undefined> {
  try {
    return await selectOverlayfs(stick, { partition });
  } catch (err) {
    if (err instanceof UsageError) throw err;
    if (err instanceof LivestickError) return undefined;
    throw err;
  }
}
