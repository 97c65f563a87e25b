/** Targets that misbehave on purpose, so the harness's own test can show each kind of finding is caught. */
import { CorruptImageError } from '../../src/errors.ts';
import type { Target } from './harness.ts';

const seed = { name: 'eight bytes', bytes: new Uint8Array(8), fields: [], hot: [] };
const target = (name: string, exercise: Target['exercise']): Target => ({ name, seeds: async () => [seed], exercise });

export const SELFTEST: Record<string, Target> = {
  'selftest-typed': target('selftest-typed', async () => {
    throw new CorruptImageError('selftest', 'field', 'typed');
  }),
  'selftest-untyped': target('selftest-untyped', async () => {
    void (undefined as unknown as { x: number }).x;
  }),
  'selftest-read-loop': target('selftest-read-loop', async (disk) => {
    for (;;) await disk.read(new Uint8Array(0), 0);
  }),
  'selftest-hang': target('selftest-hang', async (_disk, _seed, budget) => {
    if (budget.deadline > 0) for (;;);
  }),
};
