/**
 * Our journal replay against e2fsprogs: transactions written by debugfs's journal commands (csum v3,
 * 64bit tags, a revoke record, a block starting with the jbd2 magic) on mke2fs images with 1 KiB and
 * 4 KiB blocks are replayed by e2fsck -fy on one copy and by replayJournal on another; the images
 * must be identical (apart from the times e2fsck stamps in the superblock), and e2fsck -fn clean.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FileDisk } from '../../src/io/disk.ts';
import { Ext4 } from '../../src/fs/ext4/fs.ts';
import { Journal, JBD2_MAGIC, JournalIncompat, replayJournal, scanLog } from '../../src/fs/ext4/jbd2/index.ts';
import { tempDir } from '../helpers/tmp.ts';
import { missingTools, run } from '../helpers/tools.ts';

describe('jbd2 replay matches e2fsck on journals written by debugfs', { skip: missingTools('mke2fs', 'e2fsck', 'debugfs') }, () => {
  for (const blockSize of [1024, 4096]) {
    test(`${blockSize}-byte blocks`, async () => {
      const tmp = tempDir('livestick-jbd2-oracle-');
      try {
        const img = join(tmp.dir, 'fs.img');
        run('mke2fs', ['-q', '-t', 'ext4', '-b', String(blockSize), '-F', img, '32M']);
        const a = Buffer.alloc(blockSize * 2, 0x41);
        a.writeUInt32BE(JBD2_MAGIC, 0); // escaped in the log
        const b = Buffer.alloc(blockSize, 0x42);
        writeFileSync(join(tmp.dir, 'a'), a);
        writeFileSync(join(tmp.dir, 'b'), b);
        // tx 1: blocks 3000, 3001; tx 2: revoke 3001; tx 3: block 3002.
        writeFileSync(join(tmp.dir, 'cmds'), `jo -c\njw -b 3000,3001 ${join(tmp.dir, 'a')}\njw -r 3001\njw -b 3002 ${join(tmp.dir, 'b')}\njc\n`);
        run('debugfs', ['-w', '-f', join(tmp.dir, 'cmds'), img]);
        const theirs = join(tmp.dir, 'theirs.img');
        copyFileSync(img, theirs);
        run('e2fsck', ['-fy', theirs], { allowFail: true });

        const disk = await FileDisk.open(img);
        try {
          const fs = await Ext4.open(disk);
          const journal = (await Journal.locate(fs))!;
          assert.ok(journal.sb.featureIncompat & JournalIncompat.csumV3 && journal.sb.featureIncompat & JournalIncompat.bit64, 'debugfs made a csum v3, 64bit journal');
          const scan = await scanLog(journal, disk);
          assert.deepEqual(scan.committed.map((t) => [t.blocks.map((x) => x.tag.block), t.revoked]), [[[3000, 3001], []], [[], [3001]], [[3002], []]]);
          assert.equal(scan.committed[0]!.blocks[0]!.tag.flags & 1, 1, 'the magic-led block is escaped');
          const r = await replayJournal(fs);
          assert.deepEqual([r.recovered, r.transactions, r.blocks, r.revokedHits, r.badChecksums], [true, 3, 2, 1, 0]);
        } finally {
          await disk.close();
        }
        const ours = readFileSync(img);
        const ref = readFileSync(theirs);
        assert.ok(ours.subarray(3000 * blockSize, 3001 * blockSize).equals(a.subarray(0, blockSize)), 'block 3000 unescaped');
        assert.ok(ours.subarray(3001 * blockSize, 3002 * blockSize).every((x) => x === 0), 'block 3001 revoked');
        assert.ok(ours.subarray(3002 * blockSize, 3003 * blockSize).equals(b));
        // Identical images, but for what e2fsck stamps in the superblock (s_wtime, s_lastcheck,
        // s_kbytes_written, and so the checksum).
        for (const [at, n] of [[48, 4], [64, 4], [376, 8], [1020, 4]] as const) {
          ours.fill(0, 1024 + at, 1024 + at + n);
          ref.fill(0, 1024 + at, 1024 + at + n);
        }
        assert.ok(ours.equals(ref), 'our replay leaves the same bytes as e2fsck');
        const check = run('e2fsck', ['-fn', img], { allowFail: true });
        assert.equal(check.status, 0, check.stdout);
      } finally {
        tmp.cleanup();
      }
    });
  }
});
