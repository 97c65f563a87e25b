/**
 * Ventoy's plugin file `ventoy/ventoy.json`, the part livestick needs: the `persistence` plugin,
 * mapping an ISO on the Ventoy partition to its backend image files (`.dat`).
 *
 *   "persistence": [ { "image": "/ISO/x.iso", "backend": "/p.dat" | ["/a.dat", "/b.dat"],
 *                      "autosel": 1, "timeout": 10 } ]
 *
 * Decode validates every field of the plugin (paths absolute, backends non-empty and distinct,
 * autosel a backend's 1-based number, timeout ≥ 0, no unknown field) and names the entry and field
 * that is wrong; a JSON syntax error names its line. Every other key of the file is kept as it was,
 * so encode(decode(x)) changes nothing but the plugin's formatting.
 */
import { CorruptImageError } from '../../errors.ts';

export interface VentoyPersistence {
  readonly image: string;
  readonly backends: readonly string[];
  readonly autosel?: number;
  readonly timeout?: number;
}

export interface VentoyJson {
  readonly persistence: readonly VentoyPersistence[];
  /** Every other top-level key, as parsed. */
  readonly other: Readonly<Record<string, unknown>>;
}

const FORMAT = 'ventoy.json';
const ENTRY_KEYS = new Set(['image', 'backend', 'autosel', 'timeout']);

function lineOf(text: string, position: number): number {
  let line = 1;
  for (let i = 0; i < position && i < text.length; i++) if (text.charCodeAt(i) === 10) line++;
  return line;
}

function parse(text: string): unknown {
  try {
    return JSON.parse(text.replace(/^\uFEFF/, ''));
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    const pos = /position (\d+)/.exec(msg);
    const lc = /line (\d+)/.exec(msg);
    const line = lc ? Number(lc[1]) : pos ? lineOf(text, Number(pos[1])) : undefined;
    throw new CorruptImageError(FORMAT, line === undefined ? 'JSON' : `line ${line}`, `not valid JSON (${msg})`);
  }
}

function absolutePath(value: unknown, field: string): string {
  if (typeof value !== 'string' || value === '') throw new CorruptImageError(FORMAT, field, `must be a non-empty string, not ${JSON.stringify(value)}`);
  if (!value.startsWith('/')) throw new CorruptImageError(FORMAT, field, `"${value}" must be an absolute path on the Ventoy partition (starting with /)`);
  if (value.split('/').some((c) => c === '..')) throw new CorruptImageError(FORMAT, field, `"${value}" has a .. component`);
  return value;
}

function entry(raw: unknown, i: number): VentoyPersistence {
  const at = `persistence[${i}]`;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new CorruptImageError(FORMAT, at, 'must be an object with "image" and "backend"');
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!ENTRY_KEYS.has(k)) throw new CorruptImageError(FORMAT, `${at}.${k}`, 'unknown field (expected image, backend, autosel, timeout)');
  const image = absolutePath(o.image, `${at}.image`);
  if (o.backend === undefined) throw new CorruptImageError(FORMAT, `${at}.backend`, 'is missing');
  const list = Array.isArray(o.backend) ? o.backend : [o.backend];
  if (list.length === 0) throw new CorruptImageError(FORMAT, `${at}.backend`, 'is an empty list');
  const backends = list.map((b, j) => absolutePath(b, Array.isArray(o.backend) ? `${at}.backend[${j}]` : `${at}.backend`));
  const dup = backends.find((b, j) => backends.indexOf(b) !== j);
  if (dup !== undefined) throw new CorruptImageError(FORMAT, `${at}.backend`, `"${dup}" is listed twice`);
  const int = (k: 'autosel' | 'timeout', min: number, max: number): number | undefined => {
    const v = o[k];
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new CorruptImageError(FORMAT, `${at}.${k}`, `must be an integer from ${min} to ${max}, not ${JSON.stringify(v)}`);
    return v;
  };
  const autosel = int('autosel', 1, backends.length);
  const timeout = int('timeout', 0, 2 ** 31 - 1);
  return { image, backends, ...(autosel !== undefined ? { autosel } : {}), ...(timeout !== undefined ? { timeout } : {}) };
}

export function decodeVentoyJson(text: string): VentoyJson {
  const root = parse(text);
  if (typeof root !== 'object' || root === null || Array.isArray(root)) throw new CorruptImageError(FORMAT, 'top level', 'must be a JSON object');
  const { persistence, ...other } = root as Record<string, unknown>;
  if (persistence === undefined) return { persistence: [], other };
  if (!Array.isArray(persistence)) throw new CorruptImageError(FORMAT, 'persistence', 'must be a list of {image, backend} objects');
  const entries = persistence.map(entry);
  const dup = entries.find((e, i) => entries.findIndex((x) => x.image === e.image) !== i);
  if (dup) throw new CorruptImageError(FORMAT, 'persistence', `the image "${dup.image}" is listed twice`);
  return { persistence: entries, other };
}

export function encodeVentoyJson(value: VentoyJson): string {
  const persistence = value.persistence.map((e) => ({
    image: e.image,
    backend: e.backends.length === 1 ? e.backends[0] : [...e.backends],
    ...(e.autosel !== undefined ? { autosel: e.autosel } : {}),
    ...(e.timeout !== undefined ? { timeout: e.timeout } : {}),
  }));
  return `${JSON.stringify({ ...value.other, ...(persistence.length > 0 ? { persistence } : {}) }, null, 4)}\n`;
}
