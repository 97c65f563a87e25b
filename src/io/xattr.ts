/**
 * Extended attributes of host files, through the prebuilt @napi-rs/xattr binding.
 *
 * Design notes
 * - Never follows symlinks: the binding's list/get/set are the Rust `xattr` crate's plain calls,
 *   which are llistxattr/lgetxattr/lsetxattr on Linux (XATTR_NOFOLLOW on macOS, extattr_*_link on
 *   FreeBSD), so a symlink's own attributes are read and written, never its target's.
 * - Only user.*, trusted.* and security.* are copied: they are what SquashFS can store, and what
 *   mksquashfs and unsquashfs copy. system.* (POSIX ACLs) has a different layout on ext4 than the
 *   host's xattr interface gives, so it is skipped with one warning.
 * - The binding loads on first use. Where it has no prebuilt binary (another OS or libc), every call
 *   is a no-op and one warning per process says extended attributes are not copied.
 * - Reading: a filesystem without xattrs (ENOTSUP) reads as none, with one warning; a path that is
 *   gone or unreadable is a typed error. The binding's get reports every failure as "no value", so
 *   an attribute that vanishes between list and get is skipped (one warning).
 * - Writing follows unsquashfs: user.* always, trusted.* and security.* only as root (one warning
 *   otherwise); a failure to set is a warning, never an abort. ENOTSUP stops the run's xattr writes
 *   (the destination cannot hold any); EPERM on trusted.* or security.* stops that namespace.
 * - Warnings go to stderr as "livestick: warning: …", each kind once per process.
 * - Single changes (`setHostXattr`, `removeHostXattr`: a writable host FileSystem's) are not copies:
 *   they throw typed errors instead of warning — PermissionError for EPERM/EACCES (trusted.*
 *   without CAP_SYS_ADMIN, user.* on a symlink or device under Linux), UnsupportedFeatureError where
 *   the binding does not load or the filesystem refuses the name (ENOTSUP), NotFoundError for a
 *   missing path or, on removal, a missing attribute — and each passes a fault point ('write').
 */
import { createRequire } from 'node:module';
import { constants } from 'node:os';
import { NotFoundError, UnsupportedFeatureError, fromSystemError } from '../errors.ts';
import { SimulatedCrash, faultPoint } from './faults.ts';

export interface HostXattr {
  /** Full name with its namespace prefix, e.g. "security.capability". */
  readonly name: string;
  readonly value: Uint8Array;
}

interface Binding {
  listAttributesSync(path: string): string[];
  getAttributeSync(path: string, name: string): Buffer | null;
  setAttributeSync(path: string, name: string, value: Uint8Array): void;
  removeAttributeSync(path: string, name: string): void;
}

export const COPIED_NAMESPACES = ['user', 'trusted', 'security'] as const;
export type XattrNamespace = (typeof COPIED_NAMESPACES)[number];

let binding: { api: Binding | undefined; why: string } | undefined;

function load(): Binding | undefined {
  binding ??= (() => {
    try {
      return { api: createRequire(import.meta.url)('@napi-rs/xattr') as Binding, why: '' };
    } catch (err) {
      return { api: undefined, why: err instanceof Error ? err.message.split('.')[0] ?? '' : String(err) };
    }
  })();
  if (binding.api === undefined) warnOnce('unavailable', `extended attributes are not copied on this platform (${process.platform}-${process.arch}: ${binding.why})`);
  return binding.api;
}

/** Whether host xattrs can be read and written here (loads the binding). */
export function hostXattrsAvailable(): boolean {
  return load() !== undefined;
}

let sink: (message: string) => void = (message) => process.stderr.write(`livestick: warning: ${message}\n`);
const warned = new Set<string>();

function warnOnce(kind: string, message: string): void {
  if (warned.has(kind)) return;
  warned.add(kind);
  sink(message);
}

/** Redirects xattr warnings (tests); returns a function that restores the previous sink and forgets what was warned. */
export function captureXattrWarnings(to: (message: string) => void): () => void {
  const before = sink;
  sink = to;
  warned.clear();
  return () => {
    sink = before;
    warned.clear();
  };
}

/** The namespace of a name livestick copies, or undefined. */
export function xattrNamespace(name: string): XattrNamespace | undefined {
  const dot = name.indexOf('.');
  const ns = name.slice(0, dot);
  return dot > 0 && dot < name.length - 1 && (COPIED_NAMESPACES as readonly string[]).includes(ns) ? (ns as XattrNamespace) : undefined;
}

/** The errno name inside a binding error ("Operation not supported (os error 95)"), if any. */
function errnoOf(err: unknown): string | undefined {
  const m = /\(os error (\d+)\)/.exec(err instanceof Error ? err.message : String(err));
  if (!m) return undefined;
  const n = Number(m[1]);
  const names = Object.entries(constants.errno).filter(([, v]) => v === n).map(([k]) => k);
  return names.includes('ENOTSUP') || names.includes('EOPNOTSUPP') ? 'ENOTSUP' : names[0];
}

function asSystemError(err: unknown): Error {
  const code = errnoOf(err);
  return Object.assign(new Error(err instanceof Error ? err.message : String(err)), code === undefined ? {} : { code });
}

/** The user/trusted/security xattrs of a host path itself (a symlink's own, never its target's). */
export function readHostXattrs(path: string): HostXattr[] {
  const api = load();
  if (api === undefined) return [];
  let names: string[];
  try {
    names = api.listAttributesSync(path);
  } catch (err) {
    const code = errnoOf(err);
    if (code === 'ENOTSUP') {
      warnOnce('read-ENOTSUP', `the filesystem holding ${path} has no extended attributes; none are copied from it`);
      return [];
    }
    if (code === undefined) {
      warnOnce('read-names', `the extended attribute names of ${path} are not valid UTF-8; its extended attributes are not copied`);
      return [];
    }
    throw fromSystemError(asSystemError(err), path, 'list the extended attributes');
  }
  const out: HostXattr[] = [];
  for (const name of names) {
    if (xattrNamespace(name) === undefined) {
      warnOnce(`read-ns-${name.split('.')[0]}`, `extended attributes outside user.*, trusted.* and security.* (such as ${name} on ${path}) are not copied`);
      continue;
    }
    const value = api.getAttributeSync(path, name);
    if (value === null) {
      warnOnce('read-get', `the extended attribute ${name} of ${path} could not be read; it is not copied`);
      continue;
    }
    out.push({ name, value: new Uint8Array(value.buffer, value.byteOffset, value.byteLength) });
  }
  return out;
}

/** One change to a host path's own attributes (lsetxattr/lremovexattr), behind a fault point; typed errors. */
function changeHostXattr(path: string, name: string, what: string, change: (api: Binding) => void): void {
  const api = load();
  if (api === undefined) {
    throw new UnsupportedFeatureError('host', 'extended attributes', `cannot ${what} ${name}: the @napi-rs/xattr binding does not load on ${process.platform}-${process.arch} (${binding?.why ?? ''})`, { file: path });
  }
  try {
    faultPoint('write', `${what === 'set' ? 'setxattr' : 'removexattr'} ${name} ${path}`);
    change(api);
  } catch (err) {
    if (err instanceof SimulatedCrash) throw err;
    const injected = (err as NodeJS.ErrnoException).code;
    const code = injected !== undefined && /^E[A-Z0-9]+$/.test(injected) ? injected : errnoOf(err);
    if (code === 'ENOTSUP' || code === 'EOPNOTSUPP') {
      throw new UnsupportedFeatureError('host', 'extended attributes', `the filesystem holding it does not take ${name} (${code})`, { file: path });
    }
    if (code === 'ENODATA') throw new NotFoundError(`cannot remove the extended attribute ${name}: it has none of that name (ENODATA)`, { file: path, cause: err });
    const sys = code === undefined ? err : Object.assign(new Error(err instanceof Error ? err.message : String(err)), { code });
    throw fromSystemError(sys, path, `${what} the extended attribute ${name}`);
  }
}

/** Creates or replaces one attribute of the path itself (a symlink's own), e.g. "trusted.overlay.opaque". */
export function setHostXattr(path: string, name: string, value: Uint8Array): void {
  changeHostXattr(path, name, 'set', (api) => api.setAttributeSync(path, name, value));
}

/** Removes one attribute of the path itself; NotFoundError when it has none of that name. */
export function removeHostXattr(path: string, name: string): void {
  changeHostXattr(path, name, 'remove', (api) => api.removeAttributeSync(path, name));
}

export interface HostXattrWriterOptions {
  /** Namespaces to write (default: all three as root, else user only, as unsquashfs does). */
  readonly namespaces?: readonly XattrNamespace[];
}

function runningAsRoot(): boolean {
  return typeof process.geteuid === 'function' && process.geteuid() === 0;
}

/** Writes xattrs onto host paths for one run (an extract, an export); failures are warnings. */
export class HostXattrWriter {
  readonly #namespaces: Set<XattrNamespace>;
  readonly #explicit: boolean;
  readonly #denied = new Set<XattrNamespace>();
  #off = false;

  constructor(options: HostXattrWriterOptions = {}) {
    this.#explicit = options.namespaces !== undefined;
    this.#namespaces = new Set(options.namespaces ?? (runningAsRoot() ? COPIED_NAMESPACES : ['user']));
  }

  /** Sets each attribute on the path itself (lsetxattr: a symlink's own). */
  write(path: string, xattrs: readonly HostXattr[]): void {
    if (this.#off || xattrs.length === 0) return;
    const api = load();
    if (api === undefined) {
      this.#off = true;
      return;
    }
    for (const x of xattrs) {
      const ns = xattrNamespace(x.name);
      if (ns === undefined) {
        warnOnce(`write-ns-${x.name.split('.')[0]}`, `extended attributes outside user.*, trusted.* and security.* (such as ${x.name} on ${path}) are not written`);
        continue;
      }
      if (this.#denied.has(ns)) continue;
      if (!this.#namespaces.has(ns)) {
        if (!this.#explicit) warnOnce(`write-root-${ns}`, `not running as root: trusted.* and security.* extended attributes (such as ${x.name} on ${path}) are not restored`);
        continue;
      }
      try {
        api.setAttributeSync(path, x.name, x.value);
      } catch (err) {
        const code = errnoOf(err) ?? 'EIO';
        if (code === 'ENOTSUP') {
          warnOnce('write-ENOTSUP', `the filesystem holding ${path} does not support extended attributes (${x.name}); none are written to it`);
          this.#off = true;
          return;
        }
        if ((code === 'EPERM' || code === 'EACCES') && ns !== 'user') {
          warnOnce(`write-${code}-${ns}`, `cannot set ${ns}.* extended attributes (${x.name} on ${path}: permission denied); they are not restored`);
          this.#denied.add(ns);
          continue;
        }
        warnOnce(`write-${code}-${ns}`, `cannot set the extended attribute ${x.name} on ${path} (${code}); it and any later ${ns}.* attribute failing the same way are skipped`);
      }
    }
  }
}
