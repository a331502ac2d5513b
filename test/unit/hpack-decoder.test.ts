/**
 * The load process's HPACK decoder (bench/hpack-decoder.ts) against the
 * examples of RFC 7541 Appendix C: Huffman-coded requests (C.4) and
 * responses with eviction from a 256-byte table (C.6).
 */
import { describe, expect, it } from "vitest";
import { HpackDecoder, huffmanDecode } from "../../bench/hpack-decoder.js";

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ""), "hex");

describe("HpackDecoder", () => {
  it("decodes RFC 7541 C.4, requests with Huffman coding, sharing one table", () => {
    const d = new HpackDecoder();
    expect(d.decode(hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"))).toEqual([
      [":method", "GET"],
      [":scheme", "http"],
      [":path", "/"],
      [":authority", "www.example.com"],
    ]);
    expect(d.decode(hex("8286 84be 5886 a8eb 1064 9cbf"))).toEqual([
      [":method", "GET"],
      [":scheme", "http"],
      [":path", "/"],
      [":authority", "www.example.com"],
      ["cache-control", "no-cache"],
    ]);
    expect(d.decode(hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"))).toEqual([
      [":method", "GET"],
      [":scheme", "https"],
      [":path", "/index.html"],
      [":authority", "www.example.com"],
      ["custom-key", "custom-value"],
    ]);
  });

  it("decodes RFC 7541 C.6, responses that evict from a 256-byte table", () => {
    const d = new HpackDecoder(256);
    const date1 = "Mon, 21 Oct 2013 20:13:21 GMT";
    expect(
      d.decode(
        hex(
          "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        ),
      ),
    ).toEqual([
      [":status", "302"],
      ["cache-control", "private"],
      ["date", date1],
      ["location", "https://www.example.com"],
    ]);
    expect(d.decode(hex("4883 640e ffc1 c0bf"))).toEqual([
      [":status", "307"],
      ["cache-control", "private"],
      ["date", date1],
      ["location", "https://www.example.com"],
    ]);
    expect(
      d.decode(
        hex(
          "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        ),
      ),
    ).toEqual([
      [":status", "200"],
      ["cache-control", "private"],
      ["date", "Mon, 21 Oct 2013 20:13:22 GMT"],
      ["location", "https://www.example.com"],
      ["content-encoding", "gzip"],
      ["set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"],
    ]);
  });

  it("refuses an index beyond the table and a table size over the announced one", () => {
    expect(() => new HpackDecoder().decode(hex("be"))).toThrow(/beyond the table/);
    expect(() => new HpackDecoder(256).decode(hex("3fe1 1f"))).toThrow(/table size/);
  });
});

describe("huffmanDecode()", () => {
  it("refuses padding that is not a prefix of EOS", () => {
    // "0" is 00000; the padding 000 is not all ones.
    expect(() => huffmanDecode(hex("00"), 0, 1)).toThrow(/padding/);
    expect(huffmanDecode(hex("07"), 0, 1)).toBe("0");
  });
});
