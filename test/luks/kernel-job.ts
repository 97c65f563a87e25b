/**
 * Guest shell for the kernel oracle (test/kernel/harness.ts): open LUKS volumes with cryptsetup + dm-crypt
 * inside the guest, hash or fill their payload, and report back in lines the host parses. Used by
 * luks.kernel.test.ts; ops/home's kernel tests can reuse it (open, then mount the ext4 inside).
 *
 * The job shell is busybox sh with `cryptsetup` defined as a function running the real binary and
 * DM_DISABLE_UDEV=1 exported, so /dev/mapper/NAME is created by cryptsetup itself. Passphrases are written
 * to key files with printf octal escapes (any bytes, no shell quoting issues) and passed with --key-file,
 * which uses the file byte for byte.
 */

export const RESULT_PREFIX = '@@LUKS ';

/** printf-safe octal escaping of arbitrary bytes. */
function octal(bytes: Uint8Array): string {
  return [...bytes].map((b) => `\\${b.toString(8).padStart(3, '0')}`).join('');
}

function word(name: string): string {
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw new Error(`kernel-job: "${name}" is not a safe name`);
  return name;
}

function devicePath(device: string): string {
  if (!/^\/dev\/[a-z0-9]+$/.test(device)) throw new Error(`kernel-job: "${device}" is not a device path`);
  return device;
}

/** Lines that open `device` as /dev/mapper/NAME with `passphrase`; prints `@@LUKS NAME open <status>`. */
export function guestOpen(device: string, name: string, passphrase: Uint8Array | string, extraArgs: string[] = []): string {
  const bytes = typeof passphrase === 'string' ? new TextEncoder().encode(passphrase) : passphrase;
  const n = word(name);
  const args = extraArgs.map(word).join(' ');
  return [
    `printf '${octal(bytes)}' > /tmp/key-${n}`,
    `cryptsetup open ${args} --key-file /tmp/key-${n} ${devicePath(device)} ${n}`,
    `echo "${RESULT_PREFIX}${n} open $?"`,
    `rm -f /tmp/key-${n}`,
  ].join('\n');
}

/** Prints `@@LUKS NAME sha256 <hex>` for the first `bytes` bytes of the opened payload (bytes % 4096 == 0). */
export function guestHashPayload(name: string, bytes: number): string {
  if (bytes % 4096 !== 0) throw new Error('kernel-job: hash a multiple of 4096 bytes');
  const n = word(name);
  return `echo "${RESULT_PREFIX}${n} sha256 $(dd if=/dev/mapper/${n} bs=4096 count=${bytes / 4096} 2>/dev/null | sha256sum | cut -d' ' -f1)"`;
}

/** Copies `bytes` from a plain data disk onto the opened payload at `offset` (multiples of 4096), through dm-crypt. */
export function guestFillPayload(name: string, source: string, offset: number, bytes: number): string {
  if (offset % 4096 !== 0 || bytes % 4096 !== 0) throw new Error('kernel-job: fill in multiples of 4096 bytes');
  const n = word(name);
  return [
    `dd if=${devicePath(source)} of=/dev/mapper/${n} bs=4096 seek=${offset / 4096} count=${bytes / 4096} conv=fsync 2>/dev/null`,
    `echo "${RESULT_PREFIX}${n} fill $?"`,
  ].join('\n');
}

/** Prints `@@LUKS NAME table <dm table line, key elided>` (cipher, offsets, sector size as the kernel has them). */
export function guestTable(name: string): string {
  const n = word(name);
  return `echo "${RESULT_PREFIX}${n} table $(dmsetup table ${n} | sed 's/ [0-9a-f]\\{32,\\} / KEY /; s/ :[0-9]*:logon:[^ ]* / KEY /')"`;
}

export function guestClose(name: string): string {
  const n = word(name);
  return [`sync`, `cryptsetup close ${n}`, `echo "${RESULT_PREFIX}${n} close $?"`].join('\n');
}

/** Parses the `@@LUKS NAME WHAT VALUE` lines of a job's output: results[name][what] = value. */
export function parseGuestResults(output: string): Record<string, Record<string, string>> {
  const results: Record<string, Record<string, string>> = {};
  for (const line of output.split('\n')) {
    if (!line.startsWith(RESULT_PREFIX)) continue;
    const m = /^(\S+) (\S+) ?(.*)$/.exec(line.slice(RESULT_PREFIX.length).trim());
    if (!m) continue;
    (results[m[1]!] ??= {})[m[2]!] = m[3]!;
  }
  return results;
}
