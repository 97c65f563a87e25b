/** `livestick iso check`: the media check of a live ISO (its implanted MD5, as checkisomd5). A thin frontend over src/fs/iso9660. */
import type { Command } from 'commander';
import { CorruptImageError } from '../../errors.ts';
import { formatSize } from '../../io/bytes.ts';
import { FileDisk } from '../../io/disk.ts';
import { checkImplantedMd5 } from '../../fs/iso9660/implanted-md5.ts';
import { Progress, runCommand } from '../common.ts';

export function registerIso(program: Command): void {
  const iso = program.command('iso').description('live ISO images');

  iso.command('check')
    .description('check the MD5 implanted in an ISO (implantisomd5), as checkisomd5 and rd.live.check do')
    .argument('<image>', 'ISO image file or device')
    .option('--json', 'print one JSON document on stdout, on failure too')
    .option('-q, --quiet', 'print nothing but errors and warnings (no progress)')
    .action(async (image: string, opts: { json?: boolean; quiet?: boolean }) => {
      await runCommand(opts, async () => {
        const disk = await FileDisk.open(image, { readOnly: true });
        let progress: Progress | undefined;
        try {
          const r = await checkImplantedMd5(disk, (done, total) => {
            progress ??= new Progress('checking', total, opts);
            progress.update(done);
          });
          progress?.finish();
          if (r.status === 'failed') throw new CorruptImageError('iso9660 implanted md5', 'ISO MD5SUM', `the media check failed at ${r.where}: the image is not what was released (a bad download or a failing medium)`, undefined, { file: image });
          return { image, ...r };
        } finally {
          await disk.close();
        }
      }, (r) => r.status === 'absent'
        ? `${r.image}: no implanted checksum (nothing to check)`
        : `${r.image}: the media check passed (MD5 ${r.md5}, ${formatSize(r.status === 'passed' ? r.checkedBytes : 0)} checked)`);
    });
}
