/**
 * Oracles: tables made by sgdisk, sfdisk, fdisk (-b 4096) and xorriso read as those tools show them;
 * tables livestick writes pass `sgdisk -v` and read back through `sfdisk --json` / `fdisk -b 4096 -l`.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { missingTools, run } from '../helpers/tools.ts';
import { tempDir } from '../helpers/tmp.ts';
import { FileDisk } from '../../src/io/disk.ts';
import { addPartition, createGpt, moveBackupToEnd, partitionDisk, readPartitionTable, type PartitionTable } from '../../src/fs/ptable/index.ts';

const tmp = tempDir('ptable-oracle-');
after(() => tmp.cleanup());
let n = 0;
function image(sizeMiB: number): string {
  const path = join(tmp.dir, `disk${n++}.img`);
  writeFileSync(path, '');
  truncateSync(path, sizeMiB << 20);
  return path;
}

async function withDisk<T>(path: string, fn: (disk: FileDisk) => Promise<T>): Promise<T> {
  const disk = await FileDisk.open(path);
  try {
    return await fn(disk);
  } finally {
    await disk.close();
  }
}

interface SfdiskPart { node: string; start: number; size: number; type: string; uuid?: string; name?: string; bootable?: boolean }
function sfdiskJson(path: string): { label: string; id: string; partitions: SfdiskPart[] } {
  return JSON.parse(run('sfdisk', ['--json', path]).stdout).partitiontable;
}

/** Our partitions in sfdisk's terms (extended MBR entries are partitions to sfdisk too). */
function asSfdisk(path: string, table: PartitionTable): SfdiskPart[] {
  return table.partitions.map((p) => ({
    node: `${path}${p.index}`,
    start: p.startLba,
    size: p.sectors,
    type: typeof p.type === 'number' ? p.type.toString(16) : p.type,
    ...(p.uuid !== undefined ? { uuid: p.uuid } : {}),
    ...(p.name ? { name: p.name } : {}),
    ...(table.kind === 'mbr' && p.bootable ? { bootable: true } : {}),
  }));
}

function sfdiskParts(path: string): SfdiskPart[] {
  return sfdiskJson(path).partitions.map((p) => ({
    node: p.node, start: p.start, size: p.size, type: p.type,
    ...(p.uuid !== undefined ? { uuid: p.uuid } : {}),
    ...(p.name ? { name: p.name } : {}),
    ...(p.bootable ? { bootable: true } : {}),
  }));
}

function sgdiskClean(path: string): void {
  const out = run('sgdisk', ['-v', path], { allowFail: true });
  assert.match(out.stdout, /No problems found/, `sgdisk -v: ${out.stdout}${out.stderr}`);
}

function fdisk4k(path: string, columns: string): string[][] {
  const out = run('fdisk', ['-b', '4096', '-l', '-o', columns, path]).stdout.split('\n');
  const head = out.findIndex((l) => l.startsWith('Device'));
  return out.slice(head + 1).filter((l) => l.trim()).map((l) => l.trim().split(/\s+/));
}

test('sgdisk GPT (512) reads as sfdisk --json shows it', { skip: missingTools('sgdisk', 'sfdisk') }, async () => {
  const path = image(64);
  run('sgdisk', ['-n', '1:2048:+8M', '-t', '1:ef00', '-c', '1:EFI system', '-n', '2:0:+16M', '-t', '2:8300', '-c', '2:root', '-n', '5:0:0', '-t', '5:0700', '-c', '5:Dätä', '-A', '2:set:2', path]);
  const table = await withDisk(path, (d) => readPartitionTable(d));
  assert.equal(table.kind, 'gpt');
  assert.equal(table.sectorSize, 512);
  assert.deepEqual(table.problems, []);
  assert.equal(table.gpt!.diskGuid, sfdiskJson(path).id);
  assert.equal(table.mbr!.role, 'protective');
  assert.deepEqual(asSfdisk(path, table), sfdiskParts(path));
  assert.equal(table.partitions[1]!.bootable, true);
  assert.deepEqual(table.partitions.map((p) => p.typeName), ['EFI System', 'Linux filesystem', 'Microsoft basic data']);
});

test('sfdisk MBR with extended and logical partitions reads as sfdisk --json shows it', { skip: missingTools('sfdisk') }, async () => {
  const path = image(64);
  run('sfdisk', ['-q', path], { input: 'label: dos\nlabel-id: 0x1234abcd\n,8M,c,*\n,8M,83\n,,5\n,4M,83\n,4M,82\n,,7\n' });
  const table = await withDisk(path, (d) => readPartitionTable(d));
  assert.equal(table.kind, 'mbr');
  assert.deepEqual(table.problems, []);
  assert.equal(table.mbr!.value.diskSignature, 0x1234abcd);
  assert.deepEqual(table.partitions.map((p) => p.index), [1, 2, 3, 5, 6, 7]);
  assert.deepEqual(asSfdisk(path, table), sfdiskParts(path));
  // The logical partition is usable as a Disk.
  await withDisk(path, async (d) => {
    const part = partitionDisk(d, table.partitions.find((p) => p.index === 6)!);
    assert.equal(part.size, 4 << 20);
  });
});

test('fdisk -b 4096 GPT and MBR tables read with 4096-byte sectors', { skip: missingTools('fdisk') }, async () => {
  const gptPath = image(64);
  run('fdisk', ['-b', '4096', gptPath], { input: 'g\nn\n\n\n+8M\nn\n\n\n+16M\nt\n1\n1\nw\n' });
  const gpt = await withDisk(gptPath, (d) => readPartitionTable(d));
  assert.equal(gpt.kind, 'gpt');
  assert.equal(gpt.sectorSize, 4096);
  assert.deepEqual(gpt.problems, []);
  assert.deepEqual(gpt.partitions.map((p) => [`${gptPath}${p.index}`, String(p.startLba), String(p.sectors), p.type, p.uuid]), fdisk4k(gptPath, 'Device,Start,Sectors,Type-UUID,UUID'));
  const mbrPath = image(64);
  run('fdisk', ['-b', '4096', mbrPath], { input: 'o\nn\np\n\n\n+8M\nn\ne\n\n\n\nn\n\n+4M\nn\n\n+4M\nw\n' });
  const mbr = await withDisk(mbrPath, (d) => readPartitionTable(d, { sectorSize: 4096 }));
  assert.equal(mbr.kind, 'mbr');
  assert.deepEqual(mbr.problems, []);
  assert.deepEqual(mbr.partitions.map((p) => [`${mbrPath}${p.index}`, String(p.startLba), String(p.sectors), (p.type as number).toString(16)]), fdisk4k(mbrPath, 'Device,Start,Sectors,Id'));
  assert.equal(mbr.partitions.at(-1)!.startBytes, mbr.partitions.at(-1)!.startLba * 4096);
});

test('GPTs livestick writes (512 and 4096) pass sgdisk -v / read back by sfdisk and fdisk', { skip: missingTools('sgdisk', 'sfdisk', 'fdisk') }, async () => {
  const path = image(64);
  await withDisk(path, async (d) => {
    let t = await createGpt(d, { diskGuid: '01234567-89AB-CDEF-0123-456789ABCDEF' });
    t = await addPartition(d, t, { sizeBytes: 16 << 20, type: 'efi-system', name: 'EFI' });
    t = await addPartition(d, t, { type: 'linux-filesystem', name: 'persistence' });
    assert.deepEqual(t.problems, []);
    assert.deepEqual(asSfdisk(path, t), sfdiskParts(path));
    assert.equal(t.partitions[0]!.startLba, 2048);
  });
  sgdiskClean(path);
  const path4 = image(64);
  await withDisk(path4, async (d) => {
    let t = await createGpt(d, { diskGuid: '11234567-89AB-CDEF-0123-456789ABCDEF', sectorSize: 4096 });
    t = await addPartition(d, t, { sizeBytes: 8 << 20, type: 'microsoft-basic-data' });
    t = await addPartition(d, t, { type: 'linux-swap' });
    assert.equal(t.sectorSize, 4096);
    assert.deepEqual(t.partitions.map((p) => [`${path4}${p.index}`, String(p.startLba), String(p.sectors), p.type, p.uuid]), fdisk4k(path4, 'Device,Start,Sectors,Type-UUID,UUID'));
    const plain = run('fdisk', ['-b', '4096', '-l', path4]);
    assert.doesNotMatch(plain.stdout + plain.stderr, /corrupt|mismatch|invalid|not at the end/i);
  });
});

test('addPartition on an sfdisk MBR adds a primary that sfdisk reads; only sector 0 changes', { skip: missingTools('sfdisk') }, async () => {
  const path = image(64);
  run('sfdisk', ['-q', path], { input: 'label: dos\n,8M,c\n,20M,5\n,4M,83\n' });
  const before = readFileSync(path);
  await withDisk(path, async (d) => {
    const t = await addPartition(d, await readPartitionTable(d), { sizeBytes: 10 << 20, type: 'fat32' });
    assert.deepEqual(t.partitions.map((p) => p.index), [1, 2, 3, 4]);
    assert.equal(t.partitions[3]!.type, 0x0c);
    assert.equal(t.partitions[3]!.startBytes, 33 << 20);
    assert.deepEqual(asSfdisk(path, t), sfdiskParts(path));
  });
  const now = readFileSync(path);
  assert.ok(now.subarray(512).equals(before.subarray(512)));
});

test('hybrid MBR (sgdisk -h) is seen beside the GPT; adding keeps it and sgdisk -v stays clean', { skip: missingTools('sgdisk', 'sfdisk') }, async () => {
  const path = image(64);
  run('sgdisk', ['-n', '1:2048:+8M', '-t', '1:0700', '-n', '2:0:+8M', '-t', '2:ef00', '-h', '1:2', path]);
  await withDisk(path, async (d) => {
    const t = await readPartitionTable(d);
    assert.equal(t.kind, 'gpt');
    assert.equal(t.mbr!.role, 'hybrid');
    const hybrid = t.mbr!.value.entries.filter((e) => e.type !== 0 && e.type !== 0xee).map((e) => [e.startLba, e.sectors]);
    assert.deepEqual(hybrid, t.partitions.map((p) => [p.startLba, p.sectors]));
    const after = await addPartition(d, t, { type: 'linux-filesystem' });
    assert.deepEqual(after.mbr!.value, t.mbr!.value);
    assert.deepEqual(asSfdisk(path, after), sfdiskParts(path));
  });
  sgdiskClean(path);
});

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

test('xorriso hybrid ISO: read as sfdisk shows it; dd onto a larger stick, then moveBackupToEnd + addPartition', { skip: missingTools('xorriso', 'mkfs.fat', 'sgdisk', 'sfdisk') }, async () => {
  const root = join(tmp.dir, 'iso-root');
  mkdirSync(join(root, 'LiveOS'), { recursive: true });
  writeFileSync(join(root, 'LiveOS', 'squashfs.img'), Buffer.alloc(300_000, 7));
  const efi = join(tmp.dir, 'efi.img');
  writeFileSync(efi, '');
  truncateSync(efi, 2 << 20);
  run('mkfs.fat', ['-n', 'EFI', efi]);
  const iso = join(tmp.dir, 'live.iso');
  run('xorriso', ['-as', 'mkisofs', '-o', iso, '-V', 'LIVE', '-R', '-J', '-append_partition', '2', '0xef', efi, '-appended_part_as_gpt', '-partition_offset', '16', root]);
  const isoTable = await withDisk(iso, (d) => readPartitionTable(d));
  assert.equal(isoTable.kind, 'gpt');
  assert.deepEqual(isoTable.problems, []);
  assert.deepEqual(asSfdisk(iso, isoTable), sfdiskParts(iso));
  assert.equal(isoTable.partitions[0]!.name, 'ISO9660');

  const mbrIso = join(tmp.dir, 'live-mbr.iso');
  run('xorriso', ['-as', 'mkisofs', '-o', mbrIso, '-V', 'LIVE', '-R', '-append_partition', '2', '0xef', efi, '-partition_offset', '16', root]);
  const mbrTable = await withDisk(mbrIso, (d) => readPartitionTable(d));
  assert.equal(mbrTable.kind, 'mbr');
  assert.deepEqual(asSfdisk(mbrIso, mbrTable), sfdiskParts(mbrIso));

  // isohybrid style: an MBR without 0xEE (ISO as a type 0x00 bootable entry) and a GPT beside it.
  writeFileSync(join(tmp.dir, 'mbr.bin'), Buffer.alloc(432));
  mkdirSync(join(root, 'boot'));
  writeFileSync(join(root, 'boot', 'boot.bin'), Buffer.alloc(2048));
  const isohybrid = join(tmp.dir, 'isohybrid.iso');
  run('xorriso', ['-as', 'mkisofs', '-o', isohybrid, '-V', 'LIVE', '-R', '-b', 'boot/boot.bin', '-no-emul-boot', '-boot-load-size', '4', '-isohybrid-mbr', join(tmp.dir, 'mbr.bin'), '-isohybrid-gpt-basdat', '-append_partition', '2', '0xef', efi, '-partition_offset', '16', root]);
  const hybridTable = await withDisk(isohybrid, (d) => readPartitionTable(d));
  assert.equal(hybridTable.kind, 'mbr');
  assert.deepEqual(asSfdisk(isohybrid, hybridTable), sfdiskParts(isohybrid));
  assert.equal(hybridTable.partitions[0]!.type, 0);
  assert.ok(hybridTable.problems.some((p) => /GPT header at LBA 1 .* is ignored/.test(p)), hybridTable.problems.join('\n'));

  const stick = join(tmp.dir, 'stick.img');
  copyFileSync(iso, stick);
  const isoBytes = readFileSync(iso);
  truncateSync(stick, 64 << 20);
  const tableEnd = (isoTable.gpt!.header.entriesLba + 62) * 512;
  await withDisk(stick, async (d) => {
    const t = await readPartitionTable(d);
    assert.equal(t.gpt!.backupAtEnd, false);
    assert.equal(t.gpt!.backupLba, isoBytes.byteLength / 512 - 1);
    assert.ok(t.problems.some((p) => /not at the disk's last sector/.test(p)), t.problems.join('\n'));
    const moved = await moveBackupToEnd(d, t);
    assert.equal(moved.gpt!.backupAtEnd, true);
    assert.deepEqual(moved.problems, []);
    const added = await addPartition(d, moved, { type: 'linux-filesystem', name: 'persistence' });
    assert.equal(added.partitions.length, 4);
    assert.equal(added.partitions[3]!.startBytes % (1 << 20), 0);
    assert.ok(added.partitions[3]!.startLba > isoTable.partitions.at(-1)!.startLba + isoTable.partitions.at(-1)!.sectors - 1);
    assert.deepEqual(asSfdisk(stick, added), sfdiskParts(stick));
  });
  sgdiskClean(stick);
  const now = readFileSync(stick);
  assert.equal(sha256(now.subarray(0, 440)), sha256(isoBytes.subarray(0, 440)), 'boot code');
  assert.equal(sha256(now.subarray(tableEnd, isoBytes.byteLength)), sha256(isoBytes.subarray(tableEnd)), 'the ISO past its tables');
});
