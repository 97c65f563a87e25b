/** LUKS2 / LUKS1 volumes in userspace: see volume.ts for the API and its design notes. */
export { LUKS2_DEFAULT_DATA_OFFSET, LuksVolume, WrongPassphraseError, resolveKdf } from './volume.ts';
export type { KdfChoice, Luks2FormatOptions, LuksInfo, LuksKeyslotInfo, OpenOptions, RandomSource, UnlockResult } from './volume.ts';
export { CryptDisk, createSectorCipher } from './crypt-disk.ts';
export type { SectorCipher } from './crypt-disk.ts';
export { defaultKdfLimits, deriveKey, useArgon2Backend } from './kdf.ts';
export type { KdfLimits, KdfParams } from './kdf.ts';
export { XtsCipher } from './xts.ts';
