/**
 * Imported by every test file that uses fast-check. Property tests explore new random cases on
 * every local run; CI uses one fixed seed so a landing never depends on the luck of the draw. A failure
 * prints its seed; `FC_SEED=<seed> npm test -- <file>` replays it.
 */
import fc from 'fast-check';

const seed = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : process.env.CI ? 20261125 : undefined;
if (seed !== undefined) fc.configureGlobal({ seed });
