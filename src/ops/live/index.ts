/**
 * The live systems of a whole stick and their persistence, one model for every boot scheme
 * (dracut, live-boot, casper, and each under Ventoy). status, merge, reset and inspect are written
 * against it without knowing the scheme.
 *
 * Design notes
 * - volumes.ts: a target (directory, image, device) is a Stick of Volumes — partitions or the whole
 *   disk, and nested volumes for image files inside them (`p1:/LiveOS/overlay-L-U`), opened on
 *   demand through fs/registry.ts; LUKS is reported, and opened only with a passphrase callback.
 * - model.ts: a LiveSystem is a base as a lower stack (volume + image path, top first) with its
 *   persistence and home; a Persistence is a dm-snapshot COW file, an overlayfs upper + work, or a
 *   live-boot bind/link directory, with the sentence saying what booting does with it. `open()` and
 *   `openLowers()` hand out FileSystems the overlay view takes as they are.
 * - schemes/: one file per scheme, each recognising its bases and persistence by content (magics,
 *   directories inside images, labels, persistence.conf, ventoy.json, boot-config arguments) and
 *   saying through `claims` which base a persistence belongs to. A new scheme is one file plus its
 *   line in schemes/index.ts.
 * - find.ts runs the schemes and assigns each persistence to the one base claiming it; the rest is
 *   listed as unmatched with the reason. Problems (a malformed persistence.conf, an unreadable
 *   image) are collected with the file they are about; they never stop the walk.
 * - persistence-conf.ts and ventoy-json.ts are strict decode/encode pairs for the two config files.
 */
export { openStick, withStick, Stick, Volume, type OpenStickOptions, type PartitionInfo, type VolumeFilesystem } from './volumes.ts';
export { findLive, findLiveSystems, type LiveFindings } from './find.ts';
export { openLower, type Home, type LiveSystem, type Lower, type LowerLayer, type OpenPersistence, type Persistence, type PersistenceKind, type SchemeName } from './model.ts';
export { decodePersistenceConf, encodePersistenceConf, entryPaths, type PersistenceConf, type PersistenceConfEntry, type PersistenceMethod } from './persistence-conf.ts';
export { decodeVentoyJson, encodeVentoyJson, type VentoyJson, type VentoyPersistence } from './ventoy-json.ts';
export { parseBootArgs, type BootArgs } from './bootcfg.ts';
