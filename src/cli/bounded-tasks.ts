// The commands' heavy work that runs in a bounded worker (./bounded.ts): each task takes and returns
// structured-cloneable values only.
import type { OverlayfsMergeOptions } from '../ops/overlayfs/merge.ts';

export const TASKS = {
  async mergeOverlayfs(medium: string, options: Omit<OverlayfsMergeOptions, 'onProgress'>) {
    const { mergeOverlayfs } = await import('../ops/overlayfs/merge.ts');
    return mergeOverlayfs(medium, options);
  },
};

export type TaskName = keyof typeof TASKS;
