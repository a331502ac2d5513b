/**
 * An HPACK decoder (RFC 7541) for the load process's own HTTP/2 client
 * (grpc-h2-client.ts): header blocks as a server's nghttp2 encodes them, with
 * the dynamic table, size updates and Huffman-coded strings. Only what a
 * client reads: no encoder.
 */

/** A decoded header field: name and value. */
export type HeaderField = readonly [name: string, value: string];

/** RFC 7541 Appendix A: the static table (index 1 to 61). */
const staticTable: readonly HeaderField[] = [
  [":authority", ""],
  [":method", "GET"],
  [":method", "POST"],
  [":path", "/"],
  [":path", "/index.html"],
  [":scheme", "http"],
  [":scheme", "https"],
  [":status", "200"],
  [":status", "204"],
  [":status", "206"],
  [":status", "304"],
  [":status", "400"],
  [":status", "404"],
  [":status", "500"],
  ["accept-charset", ""],
  ["accept-encoding", "gzip, deflate"],
  ["accept-language", ""],
  ["accept-ranges", ""],
  ["accept", ""],
  ["access-control-allow-origin", ""],
  ["age", ""],
  ["allow", ""],
  ["authorization", ""],
  ["cache-control", ""],
  ["content-disposition", ""],
  ["content-encoding", ""],
  ["content-language", ""],
  ["content-length", ""],
  ["content-location", ""],
  ["content-range", ""],
  ["content-type", ""],
  ["cookie", ""],
  ["date", ""],
  ["etag", ""],
  ["expect", ""],
  ["expires", ""],
  ["from", ""],
  ["host", ""],
  ["if-match", ""],
  ["if-modified-since", ""],
  ["if-none-match", ""],
  ["if-range", ""],
  ["if-unmodified-since", ""],
  ["last-modified", ""],
  ["link", ""],
  ["location", ""],
  ["max-forwards", ""],
  ["proxy-authenticate", ""],
  ["proxy-authorization", ""],
  ["range", ""],
  ["referer", ""],
  ["refresh", ""],
  ["retry-after", ""],
  ["server", ""],
  ["set-cookie", ""],
  ["strict-transport-security", ""],
  ["transfer-encoding", ""],
  ["user-agent", ""],
  ["vary", ""],
  ["via", ""],
  ["www-authenticate", ""],
];

/**
 * RFC 7541 Appendix B's Huffman code as the bit length of each symbol's
 * code (0-255, then EOS), one letter each ("A" is 5 bits). The code is
 * canonical: codes of one length are consecutive in symbol order, so the
 * lengths determine it (hpack-decoder.test.ts checks it against the RFC's
 * examples).
 */
const huffmanLengths =
  "ISXXXXXXXTZXXZXXXXXXXXZXXXXXXXXXBFFHIBDGFFDGDBBBAAABBBBBBBCDKBHFIBCCCCCCCCCCCCCCCCCCCCCCDCDIOIJBKABABABBBACCBBBABCBAABCCCCCKGJIXPRPPRRRSRSSSSSTSTTRSTSSSSQRSRSSTRQPRRSSQSRRTQRSSQQRQSRSSPRRRSRRSVVPORSRUVVVWWVTUOQVWWVWTQQVVXWWWPTPQRQQSRRUUTTVSVWVVWWWWWXWWWWWVZ";
const EOS = 256;

/**
 * The canonical decoding tables: for each code length, its first code and
 * where its symbols start in `symbols` (symbols sorted by length, then value).
 */
const huffman = (() => {
  const lengths = Array.from(huffmanLengths, (c) => c.charCodeAt(0) - 65 + 5);
  const symbols = lengths
    .map((length, symbol) => ({ length, symbol }))
    .sort((a, b) => a.length - b.length || a.symbol - b.symbol);
  const firstCode = new Array<number>(31).fill(-1);
  const firstIndex = new Array<number>(31).fill(0);
  const count = new Array<number>(31).fill(0);
  let code = 0;
  let previous = symbols[0]?.length ?? 5;
  symbols.forEach(({ length }, i) => {
    if (i > 0) code = (code + 1) * 2 ** (length - previous);
    previous = length;
    if (count[length] === 0) {
      firstCode[length] = code;
      firstIndex[length] = i;
    }
    count[length] = (count[length] ?? 0) + 1;
  });
  return { symbols: symbols.map((s) => s.symbol), firstCode, firstIndex, count };
})();

/** Decodes a Huffman-coded string (RFC 7541 5.2); throws on a bad code or padding. */
export function huffmanDecode(bytes: Uint8Array, start: number, end: number): string {
  const { symbols, firstCode, firstIndex, count } = huffman;
  let out = "";
  let code = 0;
  let length = 0;
  for (let i = start; i < end; i++) {
    const byte = bytes[i] as number;
    for (let bit = 7; bit >= 0; bit--) {
      code = code * 2 + ((byte >> bit) & 1);
      length++;
      const first = firstCode[length] as number;
      if (first >= 0 && code - first < (count[length] as number)) {
        const symbol = symbols[(firstIndex[length] as number) + code - first] as number;
        if (symbol === EOS) throw new Error("hpack: EOS in a Huffman string");
        out += String.fromCharCode(symbol);
        code = 0;
        length = 0;
      } else if (length > 30) {
        throw new Error("hpack: bad Huffman code");
      }
    }
  }
  // Padding: fewer than 8 bits, all ones (the EOS prefix).
  if (length > 7 || code !== 2 ** length - 1) throw new Error("hpack: bad Huffman padding");
  return out;
}

/**
 * One connection's HPACK decoding context: its dynamic table, at most
 * `maxTableSize` bytes (the SETTINGS_HEADER_TABLE_SIZE this end announced).
 */
export class HpackDecoder {
  /** Newest first. */
  private readonly table: HeaderField[] = [];
  private tableSize = 0;
  private limit: number;
  /** Huffman strings decoded before (a server repeats its `date` values), by their bytes. */
  private readonly huffmanCache = new Map<string, string>();

  constructor(private readonly maxTableSize = 4096) {
    this.limit = maxTableSize;
  }

  /** The fields of one whole header block. */
  decode(block: Uint8Array): HeaderField[] {
    const fields: HeaderField[] = [];
    let at = 0;
    while (at < block.length) {
      const b = block[at] as number;
      if (b & 0x80) {
        // Indexed field.
        const [index, next] = readInt(block, at, 7);
        at = next;
        fields.push(this.entry(index));
      } else if (b & 0x40) {
        // Literal with incremental indexing.
        const [index, next] = readInt(block, at, 6);
        const [field, after] = this.literal(block, next, index);
        at = after;
        fields.push(field);
        this.add(field);
      } else if (b & 0x20) {
        // Dynamic table size update.
        const [size, next] = readInt(block, at, 5);
        if (size > this.maxTableSize) throw new Error("hpack: table size over the announced one");
        at = next;
        this.limit = size;
        this.evict(0);
      } else {
        // Literal without indexing (0000) or never indexed (0001).
        const [index, next] = readInt(block, at, 4);
        const [field, after] = this.literal(block, next, index);
        at = after;
        fields.push(field);
      }
    }
    return fields;
  }

  private entry(index: number): HeaderField {
    if (index === 0) throw new Error("hpack: index 0");
    if (index <= staticTable.length) return staticTable[index - 1] as HeaderField;
    const field = this.table[index - staticTable.length - 1];
    if (field === undefined) throw new Error(`hpack: index ${index} beyond the table`);
    return field;
  }

  private literal(block: Uint8Array, at: number, nameIndex: number): [HeaderField, number] {
    let name: string;
    let next = at;
    if (nameIndex === 0) [name, next] = this.string(block, next);
    else name = this.entry(nameIndex)[0];
    const [value, after] = this.string(block, next);
    return [[name, value], after];
  }

  private string(block: Uint8Array, at: number): [string, number] {
    const huffmanCoded = ((block[at] as number) & 0x80) !== 0;
    const [length, start] = readInt(block, at, 7);
    const end = start + length;
    if (end > block.length) throw new Error("hpack: string beyond the block");
    if (!huffmanCoded)
      return [Buffer.from(block.buffer, block.byteOffset + start, length).toString("latin1"), end];
    const key = Buffer.from(block.buffer, block.byteOffset + start, length).toString("latin1");
    let s = this.huffmanCache.get(key);
    if (s === undefined) {
      s = huffmanDecode(block, start, end);
      if (this.huffmanCache.size >= 1024) this.huffmanCache.clear();
      this.huffmanCache.set(key, s);
    }
    return [s, end];
  }

  private add(field: HeaderField): void {
    const size = field[0].length + field[1].length + 32;
    this.evict(size);
    // An entry larger than the table empties it and is not added (RFC 7541 4.4).
    if (size > this.limit) return;
    this.table.unshift(field);
    this.tableSize += size;
  }

  /** Evicts the oldest entries until `room` more bytes fit. */
  private evict(room: number): void {
    while (this.tableSize + room > this.limit && this.table.length > 0) {
      const old = this.table.pop() as HeaderField;
      this.tableSize -= old[0].length + old[1].length + 32;
    }
  }
}

/** An integer with an N-bit prefix (RFC 7541 5.1) at `at`: its value and the index after it. */
function readInt(block: Uint8Array, at: number, prefixBits: number): [number, number] {
  const max = 2 ** prefixBits - 1;
  let value = (block[at] as number) & max;
  let next = at + 1;
  if (value < max) return [value, next];
  let shift = 0;
  for (;;) {
    if (next >= block.length) throw new Error("hpack: integer beyond the block");
    const b = block[next++] as number;
    value += (b & 0x7f) * 2 ** shift;
    shift += 7;
    if ((b & 0x80) === 0) return [value, next];
    if (shift > 28) throw new Error("hpack: integer too large");
  }
}
