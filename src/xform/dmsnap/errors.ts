import { ExitCode, LivestickError } from '../../errors.ts';

/** The overlay has no room for another chunk (the kernel's "Overflow" with PO, before invalidation with P). */
export class OverlayFullError extends LivestickError {
  constructor(message: string, options?: { file?: string }) {
    super('OVERLAY_FULL', ExitCode.failure, message, options);
  }
}

/** The snapshot's header says valid = 0: the kernel refuses all I/O to it and its data is unrecoverable. */
export class SnapshotInvalidError extends LivestickError {
  constructor(message: string, options?: { file?: string }) {
    super('SNAPSHOT_INVALID', ExitCode.dataError, message, options);
  }
}

/** The overlay is bound to a different base image than the one given. */
export class BaseMismatchError extends LivestickError {
  constructor(message: string, options?: { file?: string }) {
    super('BASE_MISMATCH', ExitCode.failure, message, options);
  }
}
