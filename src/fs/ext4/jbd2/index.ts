/** The ext4 journal (jbd2): on-disk formats, log scan and replay, and journaled changes. */
export * from './format.ts';
export { Journal, scanLog, replayJournal, setNeedsRecovery, type LogScan, type LoggedTransaction, type LoggedBlock, type ReplayResult } from './journal.ts';
export { JournaledDisk, COMMIT_STEPS, type CommitStep, type JournaledDiskOptions } from './journaled-disk.ts';
