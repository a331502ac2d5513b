/**
 * encodeCommand() writes the bytes ioredis writes for the same command
 * (Command#toWritable, in its string and its buffer mode), so a script run
 * with our encoding reaches Redis as it did through ioredis.
 */
import { Command } from "ioredis";
import { describe, expect, it } from "vitest";
import {
  encodeCommand,
  encodedCommand,
  joined,
  type RespArg,
} from "../../src/queue/resp-command.js";

/** What ioredis writes for `name` with `args`, as a Buffer. */
function ioredisBytes(name: string, args: RespArg[]): Buffer {
  const written = new Command(name, args).toWritable({});
  return typeof written === "string" ? Buffer.from(written) : written;
}

const cases: [string, RespArg[]][] = [
  ["no arguments", []],
  ["strings", ["sha", "2", "k:1", "k:2", '{"a":1}']],
  ["empty strings", ["", "x", ""]],
  [
    "numbers",
    [0, 12, -3, 1.5, 1e21, 123456789012, -0, 9, 10, -10, Number.MAX_SAFE_INTEGER, 2 ** 53],
  ],
  [
    "long strings (past the short-string loop)",
    ["k".repeat(64), "k".repeat(65), `${"x".repeat(70)}é`, `é${"y".repeat(63)}`],
  ],
  ["control and edge characters", ["\r\n", "\u007f", "\u0080", "\u0000", "\ud83d"]],
  ["non-ASCII strings", ["tenant-é", "日本語", "emoji 😀", "mixed ü and ascii"]],
  ["Buffers between strings", ["a", Buffer.from([0, 1, 2, 255]), "b", Buffer.alloc(0), "c"]],
  ["Buffers only", [Buffer.from("x"), Buffer.from([0xc3, 0xa9])]],
  ["a Buffer first and last", [Buffer.from("first"), "mid", 7, Buffer.from("last")]],
  [
    "lengths at the heads' digit boundaries",
    ["x".repeat(9), "x".repeat(10), "x".repeat(99), "é".repeat(50), "x".repeat(1000)],
  ],
  ["lone surrogates (written as U+FFFD)", ["\ud800", "a\udc00b", "😀".slice(0, 1)]],
  ["a long non-ASCII string", [`{"t":"${"ü".repeat(700)}"}`, "k"]],
];

describe("encodeCommand()", () => {
  for (const [what, args] of cases) {
    it(`writes ioredis's bytes for ${what}`, () => {
      expect(encodeCommand("evalsha", args).equals(ioredisBytes("evalsha", args))).toBe(true);
    });
  }

  it("writes commands larger than its first scratch buffer", () => {
    const args: RespArg[] = [];
    for (let i = 0; i < 200; i++) args.push(`key-${i}-${"x".repeat(100)}`, Buffer.alloc(300, i));
    expect(encodeCommand("evalsha", args).equals(ioredisBytes("evalsha", args))).toBe(true);
  });

  it("answers a Buffer of its own for each command (the scratch space is reused)", () => {
    const a = encodeCommand("get", ["a"]);
    const b = encodeCommand("get", ["b"]);
    expect(a.toString()).toBe("*2\r\n$3\r\nget\r\n$1\r\na\r\n");
    expect(b.toString()).toBe("*2\r\n$3\r\nget\r\n$1\r\nb\r\n");
  });
});

describe("encodedCommand()", () => {
  it("keeps its name and arguments for ioredis (keys, slots) and writes them encoded", () => {
    const args: RespArg[] = ["sha", 2, "{t}:a", "{t}:b", Buffer.from([1, 2])];
    const command = encodedCommand("evalsha", args, undefined);
    expect(command.name).toBe("evalsha");
    expect(command.getKeys()).toEqual(["{t}:a", "{t}:b"]);
    const bytes = command.toWritable({});
    expect(Buffer.isBuffer(bytes) && bytes.equals(ioredisBytes("evalsha", args))).toBe(true);
  });
});

describe("joined()", () => {
  it("joins its parts in order into one array of their total length", () => {
    const all = joined<string | number>(["sha", 2], ["k1", "k2"], [], ["a", 3]);
    expect(all).toEqual(["sha", 2, "k1", "k2", "a", 3]);
    expect(all).toHaveLength(6);
    expect(joined<string>()).toEqual([]);
  });
});
