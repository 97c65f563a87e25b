/**
 * Typed errors shared by every layer. Each carries a stable `code` (used in --json output) and the
 * process exit code the CLI maps it to. Decoders throw CorruptImageError / UnsupportedFeatureError
 * with the structure, field and byte offset; the layer that knows the file name adds it with
 * `withFile` so the user is told which file, which structure and what is wrong.
 */

export const ExitCode = {
  ok: 0,
  failure: 1,
  /** `status`: the medium needs attention (foreign or invalid overlay, damaged filesystem, nearly full). */
  unhealthy: 3,
  usage: 64,
  dataError: 65,
  noInput: 66,
  cantCreate: 73,
  ioError: 74,
  permission: 77,
  interrupted: 130,
} as const;

export type ErrorCode =
  | 'FAILURE'
  | 'USAGE'
  | 'CORRUPT_IMAGE'
  | 'UNSUPPORTED'
  | 'NOT_FOUND'
  | 'EXISTS'
  | 'IO'
  | 'PERMISSION'
  | 'OUT_OF_RANGE'
  | 'READ_ONLY'
  | 'OVERLAY_FULL'
  | 'SNAPSHOT_INVALID'
  | 'BASE_MISMATCH'
  | 'NO_SPACE'
  | 'WRONG_PASSPHRASE'
  | 'INTERRUPTED'
  | 'DEVICE_IN_USE'
  | 'VERIFY_FAILED';

export class LivestickError extends Error {
  readonly code: ErrorCode;
  readonly exitCode: number;
  file: string | undefined;

  constructor(code: ErrorCode, exitCode: number, message: string, options?: { cause?: unknown; file?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.exitCode = exitCode;
    this.file = options?.file;
  }

  /** Attaches the file the error is about (first caller wins) and returns the error. */
  withFile(file: string): this {
    if (this.file === undefined) this.file = file;
    return this;
  }

  /** Machine-readable details for --json output. */
  details(): Record<string, unknown> {
    return this.file === undefined ? {} : { file: this.file };
  }

  override toString(): string {
    return this.file === undefined ? this.message : `${this.file}: ${this.message}`;
  }
}

/** An on-disk structure violates its format: which format, which field, at which byte offset. */
export class CorruptImageError extends LivestickError {
  readonly format: string;
  readonly offset: number | undefined;
  readonly field: string;

  constructor(format: string, field: string, message: string, offset?: number, options?: { cause?: unknown; file?: string }) {
    super('CORRUPT_IMAGE', ExitCode.dataError, `${format}: ${field}: ${message}${offset === undefined ? '' : ` (at byte ${offset})`}`, options);
    this.format = format;
    this.field = field;
    this.offset = offset;
  }

  override details(): Record<string, unknown> {
    return { ...super.details(), format: this.format, field: this.field, offset: this.offset };
  }
}

/** A volume left unclean by a crash holds what its repair cannot judge: nothing was written (FAT, exFAT). */
export class RepairRefusedError extends CorruptImageError {
  constructor(format: string, what: string, tool: string) {
    super(format, 'repair after an unclean stop', `${what}; nothing was changed (check the volume with ${tool})`);
  }
}

/** Well-formed input that uses something livestick does not implement. */
export class UnsupportedFeatureError extends LivestickError {
  readonly format: string;
  readonly feature: string;

  constructor(format: string, feature: string, message?: string, options?: { file?: string }) {
    super('UNSUPPORTED', ExitCode.dataError, `${format}: unsupported ${feature}${message ? `: ${message}` : ''}`, options);
    this.format = format;
    this.feature = feature;
  }

  override details(): Record<string, unknown> {
    return { ...super.details(), format: this.format, feature: this.feature };
  }
}

export class UsageError extends LivestickError {
  constructor(message: string) {
    super('USAGE', ExitCode.usage, message);
  }
}

export class NotFoundError extends LivestickError {
  constructor(message: string, options?: { file?: string; cause?: unknown }) {
    super('NOT_FOUND', ExitCode.noInput, message, options);
  }
}

export class AlreadyExistsError extends LivestickError {
  constructor(message: string, options?: { file?: string }) {
    super('EXISTS', ExitCode.cantCreate, message, options);
  }
}

export class IoError extends LivestickError {
  constructor(message: string, options?: { file?: string; cause?: unknown }) {
    super('IO', ExitCode.ioError, message, options);
  }
}

export class PermissionError extends LivestickError {
  constructor(message: string, options?: { file?: string; cause?: unknown }) {
    super('PERMISSION', ExitCode.permission, message, options);
  }
}

/** A read or write outside a Disk's bounds: a programming error or a corrupt pointer upstream. */
export class OutOfRangeError extends LivestickError {
  constructor(message: string) {
    super('OUT_OF_RANGE', ExitCode.failure, message);
  }
}

export class ReadOnlyError extends LivestickError {
  constructor(message = 'the disk is read-only') {
    super('READ_ONLY', ExitCode.failure, message);
  }
}

/** Node's errno codes worth naming precisely: the typed error and the words (as strerror says them). */
const SYSTEM_ERRORS: Record<string, { kind: 'notFound' | 'permission' | 'exists' | 'noSpace' | 'io'; words: string }> = {
  ENOENT: { kind: 'notFound', words: 'no such file or directory' },
  ENOTDIR: { kind: 'notFound', words: 'not a directory (a part of the path is not a directory)' },
  EISDIR: { kind: 'notFound', words: 'is a directory' },
  ENAMETOOLONG: { kind: 'notFound', words: 'file name too long' },
  ELOOP: { kind: 'notFound', words: 'too many levels of symbolic links' },
  ENXIO: { kind: 'notFound', words: 'no such device or address' },
  ENODEV: { kind: 'notFound', words: 'no such device' },
  EACCES: { kind: 'permission', words: 'permission denied' },
  EPERM: { kind: 'permission', words: 'operation not permitted' },
  EROFS: { kind: 'permission', words: 'read-only filesystem' },
  EEXIST: { kind: 'exists', words: 'it already exists' },
  ENOTEMPTY: { kind: 'exists', words: 'directory not empty' },
  ENOSPC: { kind: 'noSpace', words: 'no space left on device' },
  EDQUOT: { kind: 'noSpace', words: 'disk quota exceeded' },
  EFBIG: { kind: 'noSpace', words: 'file too large for this filesystem' },
  EBUSY: { kind: 'io', words: 'device or resource busy' },
  EIO: { kind: 'io', words: 'input/output error (the disk may be failing)' },
  EXDEV: { kind: 'io', words: 'cross-device link (not on the same filesystem)' },
  EMFILE: { kind: 'io', words: 'too many open files' },
  ENFILE: { kind: 'io', words: 'too many open files in the system' },
  EAGAIN: { kind: 'io', words: 'resource temporarily unavailable' },
  EOPNOTSUPP: { kind: 'io', words: 'operation not supported by this filesystem' },
  ENOTSUP: { kind: 'io', words: 'operation not supported by this filesystem' },
  ETXTBSY: { kind: 'io', words: 'text file busy' },
};

/** Is this a Node.js system error (it carries an errno code such as ENOENT)? */
export function isSystemError(err: unknown): err is NodeJS.ErrnoException & { code: string } {
  return err instanceof Error && !(err instanceof LivestickError) && typeof (err as NodeJS.ErrnoException).code === 'string' && /^E[A-Z0-9]+$/.test((err as NodeJS.ErrnoException).code!);
}

/**
 * Wraps a Node.js system error (ENOENT, EACCES, ENOTDIR, ENOSPC, …) as the matching typed error,
 * naming the errno: "cannot open the file: not a directory (ENOTDIR)".
 */
export function fromSystemError(err: unknown, file: string, action: string): LivestickError {
  if (err instanceof LivestickError) return err.withFile(file);
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const known = code === undefined ? undefined : SYSTEM_ERRORS[code];
  if (known === undefined) {
    const reason = err instanceof Error ? err.message : String(err);
    return new IoError(`cannot ${action}: ${reason}`, { file, cause: err });
  }
  const message = `cannot ${action}: ${known.words} (${code})`;
  switch (known.kind) {
    case 'notFound':
      return new NotFoundError(message, { file, cause: err });
    case 'permission':
      return new PermissionError(message, { file, cause: err });
    case 'exists':
      return new AlreadyExistsError(message, { file });
    case 'noSpace':
      return new LivestickError('NO_SPACE', ExitCode.ioError, message, { file, cause: err });
    default:
      return new IoError(message, { file, cause: err });
  }
}
