import { ExitCode, LivestickError } from '../../errors.ts';

/** The filesystem has no room left for what a write asks. */
export class NoSpaceError extends LivestickError {
  constructor(message: string) {
    super('NO_SPACE', ExitCode.ioError, `ext4: ${message}`);
  }
}
