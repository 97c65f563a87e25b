/** The schemes find.ts runs, in order; a new scheme is one file here plus its line below. */
import type { Scheme } from '../scheme.ts';
import { casper } from './casper.ts';
import { dracut } from './dracut.ts';
import { liveBoot } from './live-boot.ts';
import { ventoy } from './ventoy.ts';

export const SCHEMES: readonly Scheme[] = [dracut, liveBoot, casper, ventoy];
