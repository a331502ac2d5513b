/**
 * Redis Cluster's key-to-slot function, and hash tags for queue shards whose
 * slots are evenly spaced over 0..16383. Tags do not balance by themselves:
 * `{shard-0}`..`{shard-2}` may all land on one master. Masters get equal,
 * contiguous slot ranges from `redis-cli --cluster create`, so N shards at
 * evenly spaced slots give each of M masters N/M shards (one more or less).
 *
 * Pure and deterministic: every process computes the same tags from the same
 * count and prefix. Changing the count changes the tags (moving shards means
 * draining them). Used by the queue shards (shards.ts) and `npm run
 * bench:cluster`, tested against `CLUSTER KEYSLOT` in
 * test/cluster/shard-tags.test.ts.
 */

/** Slots in a Redis Cluster. */
export const SLOT_COUNT = 16_384;

const table = (() => {
  const t = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let crc = i << 8;
    for (let b = 0; b < 8; b++)
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    t[i] = crc;
  }
  return t;
})();

/** CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), the checksum Redis Cluster uses. */
export function crc16(bytes: Uint8Array): number {
  let crc = 0;
  for (const byte of bytes) {
    crc = ((crc << 8) & 0xffff) ^ (table[((crc >> 8) ^ byte) & 0xff] as number);
  }
  return crc;
}

const openBrace = 0x7b;
const closeBrace = 0x7d;

/**
 * The slot of `key`, as `CLUSTER KEYSLOT` computes it: CRC16 of the key's
 * bytes mod 16384, or of its hash tag only, when the key has one: the bytes
 * between its first `{` and the first `}` after it, if there is at least one.
 */
export function keySlot(key: string | Uint8Array): number {
  const bytes = typeof key === "string" ? Buffer.from(key, "utf8") : key;
  const open = bytes.indexOf(openBrace);
  if (open >= 0) {
    const close = bytes.indexOf(closeBrace, open + 1);
    if (close > open + 1) return crc16(bytes.subarray(open + 1, close)) % SLOT_COUNT;
  }
  return crc16(bytes) % SLOT_COUNT;
}

/** The slot shard `index` of `count` aims at: the middle of the index-th of `count` equal slot ranges. */
export function targetSlot(index: number, count: number): number {
  return Math.floor(((2 * index + 1) * SLOT_COUNT) / (2 * count));
}

/**
 * `count` hash tags (without braces), one per shard, such that the slot of
 * `{tags[i]}` is exactly `targetSlot(i, count)`. Each tag is `prefix`
 * followed by a base-36 counter: the first counter value landing on the
 * target slot, so the tags are short and the same in every process.
 * @throws RangeError unless 1 <= count <= 16384 and `prefix` has no brace
 */
export function pickShardTags(count: number, options: { prefix?: string } = {}): string[] {
  const prefix = options.prefix ?? "s";
  if (!Number.isInteger(count) || count < 1 || count > SLOT_COUNT) {
    throw new RangeError(`shard count must be an integer from 1 to ${SLOT_COUNT}, got ${count}`);
  }
  if (/[{}]/.test(prefix)) throw new RangeError("a shard tag prefix cannot contain { or }");
  const wanted = new Map<number, number>();
  for (let i = 0; i < count; i++) wanted.set(targetSlot(i, count), i);
  const tags = new Array<string>(count);
  let left = count;
  // Expected candidates: about 16384 * (ln(count) + 0.6), at most a few hundred thousand.
  for (let n = 0; left > 0; n++) {
    if (n > 10_000_000) throw new Error(`no tags found for ${left} of ${count} shards`);
    const tag = `${prefix}${n.toString(36)}`;
    const slot = keySlot(tag);
    const shard = wanted.get(slot);
    if (shard !== undefined) {
      tags[shard] = tag;
      wanted.delete(slot);
      left--;
    }
  }
  return tags;
}
