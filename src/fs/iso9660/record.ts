/**
 * Directory records: the variable-length entries of a directory extent. A record never crosses a
 * sector; a zero length byte pads the rest of a sector. Names are raw bytes here (ISO d-characters with
 * ';version', or UCS-2 big-endian under Joliet); 0x00 and 0x01 are '.' and '..'. The System Use
 * area after the name holds SUSP / Rock Ridge entries (susp.ts).
 */
import { both16, both32, corrupt, decodeShortDate, encodeShortDate, need, putBoth16, putBoth32, type IsoTime } from './format.ts';

export const FLAG_HIDDEN = 0x01;
export const FLAG_DIRECTORY = 0x02;
export const FLAG_ASSOCIATED = 0x04;
export const FLAG_RECORD = 0x08;
export const FLAG_PROTECTION = 0x10;
export const FLAG_MULTI_EXTENT = 0x80;
export const MIN_RECORD = 34;

export interface DirRecord {
  readonly extAttrLength: number;
  readonly extent: number;
  readonly dataLength: number;
  readonly recorded: IsoTime;
  readonly flags: number;
  readonly fileUnitSize: number;
  readonly interleaveGap: number;
  readonly volumeSequence: number;
  readonly name: Uint8Array;
  readonly systemUse: Uint8Array;
  readonly isDirectory: boolean;
  /** Not the last extent of its file: the next record continues it. */
  readonly multiExtent: boolean;
}

/** `b` holds exactly one record (b[0] is its length); `base` is its offset in the image. */
export function decodeRecord(b: Uint8Array, base = 0): DirRecord {
  need(b, 0, 1, 'record.length', base);
  const length = b[0]!;
  if (length < MIN_RECORD) throw corrupt('record.length', `is ${length}, below ${MIN_RECORD}`, base);
  if (length !== b.byteLength) throw corrupt('record.length', `is ${length} but ${b.byteLength} bytes were given`, base);
  const nameLength = b[32]!;
  if (nameLength === 0) throw corrupt('record.nameLength', 'is 0', base + 32);
  const nameEnd = 33 + nameLength;
  const suStart = nameEnd + (nameLength % 2 === 0 ? 1 : 0);
  if (suStart > length) throw corrupt('record.nameLength', `${nameLength} does not fit a ${length}-byte record`, base + 32);
  const flags = b[25]!;
  return {
    extAttrLength: b[1]!,
    extent: both32(b, 2, 'record.extent', base),
    dataLength: both32(b, 10, 'record.dataLength', base),
    recorded: decodeShortDate(b, 18, 'record.recordingDate', base),
    flags,
    fileUnitSize: b[26]!,
    interleaveGap: b[27]!,
    volumeSequence: both16(b, 28, 'record.volumeSequenceNumber', base),
    name: b.subarray(33, nameEnd),
    systemUse: b.subarray(suStart, length),
    isDirectory: (flags & FLAG_DIRECTORY) !== 0,
    multiExtent: (flags & FLAG_MULTI_EXTENT) !== 0,
  };
}

export type DirRecordInput = Omit<DirRecord, 'isDirectory' | 'multiExtent'>;

export function encodeRecord(r: DirRecordInput): Uint8Array {
  const nameLength = r.name.byteLength;
  const suStart = 33 + nameLength + (nameLength % 2 === 0 ? 1 : 0);
  let length = suStart + r.systemUse.byteLength;
  if (length % 2 === 1) length++;
  if (length > 255) throw new RangeError(`a directory record of ${length} bytes does not fit in 255`);
  const b = new Uint8Array(length);
  b[0] = length;
  b[1] = r.extAttrLength;
  putBoth32(b, 2, r.extent);
  putBoth32(b, 10, r.dataLength);
  b.set(encodeShortDate(r.recorded), 18);
  b[25] = r.flags;
  b[26] = r.fileUnitSize;
  b[27] = r.interleaveGap;
  putBoth16(b, 28, r.volumeSequence);
  b[32] = nameLength;
  b.set(r.name, 33);
  b.set(r.systemUse, suStart);
  return b;
}

/**
 * Splits a directory extent piece (whole sectors, `base` its image offset) into records. Zero length
 * bytes skip to the next sector; a record crossing a sector boundary is corrupt.
 */
export function* splitRecords(b: Uint8Array, base: number, sector: number): Generator<readonly [DirRecord, number]> {
  let at = 0;
  while (at < b.byteLength) {
    const length = b[at]!;
    if (length === 0) {
      at = (Math.floor(at / sector) + 1) * sector;
      continue;
    }
    const sectorEnd = (Math.floor(at / sector) + 1) * sector;
    if (at + length > Math.min(sectorEnd, b.byteLength)) throw corrupt('record.length', `a ${length}-byte record crosses a sector boundary`, base + at);
    yield [decodeRecord(b.subarray(at, at + length), base + at), base + at];
    at += length;
  }
}
