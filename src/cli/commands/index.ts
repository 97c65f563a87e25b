import type { Command } from 'commander';
import { registerOverlay } from './overlay.ts';

/** Each command family lives in its own module and registers itself here. */
export function registerCommands(program: Command): void {
  registerOverlay(program);
}
