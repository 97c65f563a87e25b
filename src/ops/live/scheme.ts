/** What a scheme file provides to find.ts, and the context it runs in. */
import type { FileSystem } from '../../fs/filesystem.ts';
import { bootArgs, parseBootArgs, type BootArgs } from './bootcfg.ts';
import type { Home, LiveSystem, Persistence } from './model.ts';
import type { Stick, Volume } from './volumes.ts';

export interface HomeCandidate extends Home {
  claims(base: LiveSystem): boolean;
}

export interface Found {
  readonly systems?: LiveSystem[];
  readonly persistence?: Persistence[];
  readonly homes?: HomeCandidate[];
}

export interface Scheme {
  readonly name: string;
  /** Bases on one top-level volume. */
  bases?(ctx: SchemeContext, volume: Volume, fs: FileSystem): Promise<LiveSystem[]>;
  /** Persistence (and homes) on one top-level volume (`fs` undefined: it could not be opened, e.g. LUKS without a passphrase); image files are opened through `ctx.stick.nested`. */
  persistence?(ctx: SchemeContext, volume: Volume, fs: FileSystem | undefined): Promise<Found>;
  /** A pass over the whole stick after the per-volume ones (Ventoy: ISOs and their .dat backends). */
  stick?(ctx: SchemeContext): Promise<Found>;
}

export class SchemeContext {
  readonly problems: string[] = [];
  readonly #args = new Map<Volume, Promise<BootArgs>>();
  constructor(readonly stick: Stick) {}

  /** The boot arguments written on one volume. */
  bootArgs(volume: Volume, fs: FileSystem): Promise<BootArgs> {
    let a = this.#args.get(volume);
    if (!a) {
      a = bootArgs(fs);
      this.#args.set(volume, a);
    }
    return a;
  }

  /** The values of `key=` on every top-level volume's kernel lines (the stick boots from one of them). */
  async argValues(key: string): Promise<string[]> {
    const out: string[] = [];
    for (const v of this.stick.topLevel) {
      const fs = await v.tryOpen();
      if (!fs) continue;
      for (const value of (await this.bootArgs(v, fs)).values(key)) if (!out.includes(value)) out.push(value);
    }
    return out;
  }

  /** A problem found on the way, reported instead of failing the walk. */
  problem(where: string, err: unknown): void {
    this.problems.push(`${where}: ${err instanceof Error ? err.message : String(err)}`);
  }
}

export { parseBootArgs };
