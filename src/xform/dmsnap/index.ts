export * from './format.ts';
export * from './binding.ts';
export * from './errors.ts';
export { fingerprintBase } from './fingerprint.ts';
export { ExceptionStore, type StoreState, type StoreStatus } from './store.ts';
export { SnapshotDisk, type OverflowMode, type SnapshotDiskOptions } from './snapshot-disk.ts';
