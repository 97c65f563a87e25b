/**
 * `findLive(stick)`: every scheme over every top-level volume (bases, then persistence), then the
 * stick-wide passes (Ventoy), then each persistence and home given to the one base that claims it.
 * Persistence no base claims — or that several could use — is kept as unmatched with the reason.
 */
import { SCHEMES } from './schemes/index.ts';
import type { LiveSystem, Persistence } from './model.ts';
import { SchemeContext, type HomeCandidate } from './scheme.ts';
import type { Stick } from './volumes.ts';

export interface LiveFindings {
  readonly systems: LiveSystem[];
  /** Persistence that belongs to no base of this stick (each with `unmatched` saying why). */
  readonly unmatched: Persistence[];
  /** Problems met on the way (a malformed persistence.conf, an unreadable image), each naming its file. */
  readonly problems: string[];
}

function systemName(s: LiveSystem): string {
  return `${s.scheme} ${s.volume.displayPath(s.lowers[0]!.path)}`;
}

export async function findLive(stick: Stick): Promise<LiveFindings> {
  const ctx = new SchemeContext(stick);
  const systems: LiveSystem[] = [];
  const found: Persistence[] = [];
  const homes: HomeCandidate[] = [];
  for (const volume of stick.topLevel) {
    const fs = await volume.tryOpen();
    if (fs) for (const scheme of SCHEMES) if (scheme.bases) systems.push(...(await scheme.bases(ctx, volume, fs)));
  }
  for (const volume of stick.topLevel) {
    const fs = await volume.tryOpen();
    for (const scheme of SCHEMES) {
      if (!scheme.persistence) continue;
      const f = await scheme.persistence(ctx, volume, fs);
      found.push(...(f.persistence ?? []));
      homes.push(...(f.homes ?? []));
    }
  }
  for (const scheme of SCHEMES) {
    if (!scheme.stick) continue;
    const f = await scheme.stick(ctx);
    systems.push(...(f.systems ?? []));
    found.push(...(f.persistence ?? []));
    homes.push(...(f.homes ?? []));
  }
  const unmatched: Persistence[] = [];
  for (const p of found) {
    let candidates = systems.filter((s) => p.claims(s));
    const weak = candidates.length === 0 && p.weakClaim !== undefined;
    if (weak) candidates = systems.filter((s) => p.weakClaim!.claims(s));
    if (weak && candidates.length === 1) p.mode = `${p.mode}; ${p.weakClaim!.note}`;
    if (candidates.length === 1) {
      p.belongsTo = candidates[0];
      candidates[0]!.persistence.push(p);
    } else {
      p.unmatched = candidates.length === 0 ? p.unmatchedReason : `several bases could use it (${candidates.map(systemName).join('; ')}); the boot arguments decide`;
      unmatched.push(p);
    }
  }
  for (const h of homes) {
    const candidates = systems.filter((s) => h.claims(s) && s.home === undefined);
    if (candidates.length === 1) candidates[0]!.home = { volume: h.volume, path: h.path, encrypted: h.encrypted, mode: h.mode };
    else ctx.problems.push(`${h.volume.display}: a home volume that ${candidates.length === 0 ? 'no base on this stick uses' : 'several bases could use'}`);
  }
  return { systems, unmatched, problems: [...stick.problems, ...ctx.problems] };
}

/** The live systems of a stick, each with its persistence (see `findLive` for the unmatched ones). */
export async function findLiveSystems(stick: Stick): Promise<LiveSystem[]> {
  return (await findLive(stick)).systems;
}
