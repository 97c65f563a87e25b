/**
 * Typed errors shared by every layer. Each carries a stable `code` (used in --json output) and the
 * process exit code the CLI maps it to. Decoders throw CorruptImageError / UnsupportedFeatureError
 * with the structure, field and byte offset; the layer that knows the file name adds it with
 * `withFile` so the user is told which file, which structure and what is wrong.
 */

export const ExitCode = {
  ok: 0,
  failure: 1,
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
  | 'INTERRUPTED';

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

/** Wraps a Node.js system error (ENOENT, EACCES, EIO, ENOSPC, …) as the matching typed error. */
export function fromSystemError(err: unknown, file: string, action: string): LivestickError {
  if (err instanceof LivestickError) return err.withFile(file);
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const reason = err instanceof Error ? err.message : String(err);
  switch (code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return new NotFoundError(`cannot ${action}: no such file or directory`, { file, cause: err });
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return new PermissionError(`cannot ${action}: ${code === 'EROFS' ? 'read-only filesystem' : 'permission denied'}`, { file, cause: err });
    case 'EEXIST':
      return new AlreadyExistsError(`cannot ${action}: it already exists`, { file });
    case 'ENOSPC':
      return new LivestickError('NO_SPACE', ExitCode.ioError, `cannot ${action}: no space left on device`, { file, cause: err });
    default:
      return new IoError(`cannot ${action}: ${reason}`, { file, cause: err });
  }
}
