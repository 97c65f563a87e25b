import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A fresh temporary directory, removed by the returned cleanup (keep it with LIVESTICK_KEEP_TMP=1). */
export function tempDir(prefix = 'livestick-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return {
    dir,
    cleanup: () => {
      if (!process.env.LIVESTICK_KEEP_TMP) rmSync(dir, { recursive: true, force: true });
    },
  };
}
