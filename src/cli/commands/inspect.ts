import type { Command } from 'commander';
import { formatSize } from '../../io/bytes.ts';
import { inspectMedium, type InspectReport } from '../../ops/inspect.ts';
import { runCommand, withOutputOptions } from '../common.ts';

function renderInspect(r: InspectReport): string {
  const lines = [`${r.target}: ${r.source.kind}, ${formatSize(r.source.sizeBytes)}${r.source.model ? `, ${r.source.model}` : ''}${r.source.sectorSize ? `, ${r.source.sectorSize}-byte sectors` : ''}`];
  if (r.source.mounted && r.source.mounted.length > 0) lines.push(`  mounted: ${r.source.mounted.join(', ')}`);
  if (r.partitionTable) lines.push(`partition table: ${r.partitionTable.kind.toUpperCase()} (${r.partitionTable.sectorSize}-byte sectors), ${r.partitionTable.partitions} partition${r.partitionTable.partitions === 1 ? '' : 's'}`);
  else if (r.source.kind !== 'directory') lines.push('partition table: none (one filesystem on the whole disk)');
  lines.push('volumes:');
  for (const v of r.volumes) {
    const where = r.source.kind === 'directory' ? '' : ` at ${formatSize(v.startBytes)}, ${formatSize(v.sizeBytes)}`;
    const part = [v.partitionType, v.partitionName ? `"${v.partitionName}"` : undefined].filter(Boolean).join(' ');
    const fs = v.filesystem
      ? `${v.filesystem.type}${v.filesystem.label ? ` "${v.filesystem.label}"` : ''}${v.filesystem.uuid ? ` ${v.filesystem.uuid}` : ''}, ${formatSize(v.filesystem.freeBytes)} free of ${formatSize(v.filesystem.totalBytes)}`
      : v.signatures.length > 0
        ? `${v.signatures.join(', ')} (not opened: not supported yet)`
        : 'no known signature';
    lines.push(`  ${v.id}${where}${part ? `  ${part}` : ''}: ${fs}${v.problem ? ` — ${v.problem}` : ''}`);
  }
  if (r.liveSystems.length === 0) lines.push('live systems: none found');
  else lines.push('live systems:');
  for (const s of r.liveSystems) {
    const inside = s.base.rootImage ? `, ${s.base.rootImage} inside` : s.base.flat ? ', a flat root tree' : '';
    lines.push(`  ${s.layout}${s.scheme.startsWith('ventoy-') ? ' (Ventoy)' : ''} on ${s.volume}: ${s.base.path} (${s.base.format}${inside}, ${formatSize(s.base.bytes)})`);
    if (s.lowers.length > 1) lines.push(`    lower stack (top first): ${s.lowers.map((l) => l.path).join(', ')}`);
    for (const p of s.persistence) {
      lines.push(`    persistence: ${p.path} (${p.kind}${p.bytes ? `, ${formatSize(p.bytes)}` : ''}${p.volume !== s.volume ? `, on ${p.volume}` : ''})`);
      if (p.kind !== 'dm-snapshot file') lines.push(`      upper ${p.upper}${p.work ? `, work ${p.work}` : ''}${p.target !== '/' ? `, for ${p.target}` : ''}`);
      lines.push(`      ${p.mode}`);
    }
    if (s.persistence.length === 0) lines.push('    persistence: none');
    if (s.home) lines.push(`    home: ${s.home.path === '/' ? s.home.volume : s.home.path} (${s.home.encrypted ? 'LUKS-encrypted' : 'plain ext4'}, ${formatSize(s.home.bytes)})`);
    for (const n of s.notes) lines.push(`    note: ${n}`);
  }
  for (const p of r.unmatchedPersistence) {
    lines.push(`  unmatched persistence on ${p.volume}: ${p.path} (${p.kind}, ${p.scheme}) — ${p.unmatched}`);
    lines.push(`      ${p.mode}`);
  }
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  return lines.join('\n');
}

export function registerInspect(program: Command): void {
  const cmd = program
    .command('inspect')
    .description('show what a stick holds: partition table, volumes (filesystem, label, UUID, size, free space), live systems and their persistence')
    .argument('<target>', 'a mounted directory, an image file (made with dd) or a block device; only read');
  withOutputOptions(cmd).action(async (target: string, opts: { json?: boolean; quiet?: boolean }) => {
    await runCommand(opts, () => inspectMedium(target), renderInspect);
  });
}
