import type { Command } from 'commander';
import { registerDemo } from './demo.ts';
import { registerMedium } from './medium.ts';
import { registerOverlay } from './overlay.ts';
import { registerExt4 } from './ext4.ts';
import { registerLuks } from './luks.ts';
import { registerHome } from './home.ts';
import { registerSquashfs } from './squashfs.ts';

/** Each command family lives in its own module and registers itself here. */
export function registerCommands(program: Command): void {
  registerDemo(program);
  registerMedium(program);
  registerOverlay(program);
  registerExt4(program);
  registerLuks(program);
  registerHome(program);
  registerSquashfs(program);
}
