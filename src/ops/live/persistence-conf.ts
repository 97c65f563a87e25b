/**
 * live-boot's persistence.conf (persistence.conf(5)): one custom mount per line, `DIR [OPTION,…]`.
 * Strict decode: every rule live-boot applies is an error here, naming the line, so a stick that
 * live-boot would half-mount is reported instead of guessed at.
 *
 * Rules: blank lines and lines starting with `#` are ignored; DIR is absolute, without `.` or `..`
 * components, not /lib nor below /run/live; options are `bind` (the default), `link`, `union`
 * (the last of the three wins) and `source=PATH` (relative to the persistence volume's root, `.`
 * for the root itself); anything else is an unknown option (live-boot skips such a line). Two lines
 * whose sources are the same or nested are refused (live-boot panics at boot); the volume root as a
 * source (`/ union`) clashes only with another line using the root.
 */
import { CorruptImageError } from '../../errors.ts';

export type PersistenceMethod = 'bind' | 'link' | 'union';

export interface PersistenceConfEntry {
  /** The directory of the live system ('/' for the whole root). */
  readonly dir: string;
  readonly method: PersistenceMethod;
  /** The source directory relative to the volume root ('' for the root itself), as written or derived from DIR. */
  readonly source: string;
  /** Whether `source=` was written (encode writes it back only then). */
  readonly explicitSource: boolean;
}

export interface PersistenceConf {
  readonly entries: readonly PersistenceConfEntry[];
}

const FORMAT = 'persistence.conf';

function fail(line: number, message: string): never {
  throw new CorruptImageError(FORMAT, `line ${line}`, message);
}

function components(path: string): string[] {
  return path.split('/').filter((c) => c !== '');
}

function checkDir(dir: string, line: number): string {
  if (!dir.startsWith('/')) fail(line, `"${dir}" is not an absolute directory`);
  const parts = components(dir);
  if (parts.some((c) => c === '.' || c === '..')) fail(line, `"${dir}" has a . or .. component`);
  const norm = `/${parts.join('/')}`;
  if (norm === '/lib' || norm.startsWith('/lib/')) fail(line, `"${dir}": live-boot refuses persistence on /lib`);
  if (norm === '/run/live' || norm.startsWith('/run/live/')) fail(line, `"${dir}": live-boot refuses persistence below /run/live`);
  return norm;
}

function checkSource(value: string, line: number): string {
  if (value === '') fail(line, 'source= needs a path');
  if (value === '.') return '';
  const parts = components(value);
  if (parts.length === 0) return '';
  if (parts.some((c) => c === '..')) fail(line, `source "${value}" leaves the persistence volume (..)`);
  return parts.filter((c) => c !== '.').join('/');
}

/** The source directory of a DIR without source=: DIR without its leading '/' ('' for '/'). */
function defaultSource(dir: string): string {
  return components(dir).join('/');
}

/** Same or nested sources (the volume root itself, a `/ union` line's, is checked only against another root source). */
function nested(a: string, b: string): boolean {
  if (a === '' || b === '') return a === b;
  return a === b || a.startsWith(`${b}/`) || b.startsWith(`${a}/`);
}

export function decodePersistenceConf(text: string): PersistenceConf {
  if (text.includes('\0')) throw new CorruptImageError(FORMAT, 'text', 'holds a NUL byte: not a text file');
  const entries: (PersistenceConfEntry & { line: number })[] = [];
  const lines = text.split('\n');
  lines.forEach((raw, i) => {
    const line = i + 1;
    const trimmed = raw.replace(/\r$/, '').trim();
    if (trimmed === '' || trimmed.startsWith('#')) return;
    const fields = trimmed.split(/[ \t]+/);
    if (fields.length > 2) fail(line, `expected "DIR [OPTION,...]", found ${fields.length} fields (options are separated by commas, without spaces)`);
    const dir = checkDir(fields[0]!, line);
    let method: PersistenceMethod = 'bind';
    let source: string | undefined;
    if (fields[1] !== undefined) {
      for (const opt of fields[1].split(',')) {
        if (opt === 'bind' || opt === 'link' || opt === 'union') method = opt;
        else if (opt.startsWith('source=')) source = checkSource(opt.slice(7), line);
        else if (opt === '') fail(line, 'an empty option (two commas in a row, or a trailing comma)');
        else fail(line, `unknown option "${opt}" (live-boot skips this line)`);
      }
    }
    const entry = { dir, method, source: source ?? defaultSource(dir), explicitSource: source !== undefined, line };
    const clash = entries.find((e) => nested(e.source, entry.source));
    if (clash) fail(line, `its source "${entry.source || '.'}" and line ${clash.line}'s "${clash.source || '.'}" are the same or nested (live-boot stops the boot)`);
    if (entries.some((e) => e.dir === dir)) fail(line, `${dir} is listed twice`);
    entries.push(entry);
  });
  return { entries: entries.map(({ line: _line, ...e }) => e) };
}

export function encodePersistenceConf(conf: PersistenceConf): string {
  return conf.entries
    .map((e) => {
      const options = [e.method, ...(e.explicitSource ? [`source=${e.source === '' ? '.' : e.source}`] : [])];
      return `${e.dir} ${options.join(',')}\n`;
    })
    .join('');
}

/** The directories an entry's persistence lives in, relative to the volume root: union → `<source>/rw` + `<source>/work`; bind and link → `<source>`. */
export function entryPaths(e: PersistenceConfEntry): { upper: string; work?: string } {
  const base = e.source === '' ? '' : `/${e.source}`;
  if (e.method === 'union') return { upper: `${base}/rw`, work: `${base}/work` };
  return { upper: base === '' ? '/' : base };
}
