/**
 * An ioredis Command whose bytes (RESP) are written by us, in one pass into
 * one Buffer, for the commands with many arguments on hot paths (the
 * submit script's EVALSHA: about 35 keys and arguments, some of them msgpack
 * Buffers). ioredis writes a command with any Buffer argument in its buffer
 * mode: three pieces per argument, each measured with Buffer.byteLength
 * twice and written or copied one by one (about 200 native calls for a
 * submit, a quarter of the submitter's CPU in a profile). Here each string
 * argument is measured once and the strings between two Buffers go in one
 * write.
 *
 * Everything else is ioredis's: the command's name and arguments stay on it
 * (a Cluster finds the slot from its keys, the ioredis instrumentation reads
 * them, a resend writes the same bytes), and so do its promise, reply
 * decoding and timeouts.
 */
import { Command } from "ioredis";

/** An argument as ioredis takes it. */
export type RespArg = string | Buffer | number;

/** A command sent with bytes encoded by encodeCommand. */
class EncodedCommand extends Command {
  private bytes: Buffer | undefined;

  override toWritable(_socket: object): Buffer {
    this.bytes ??= encodeCommand(this.name, this.args as RespArg[]);
    return this.bytes;
  }
}

/**
 * A command of `name` with `args`, its reply decoded as ioredis decodes
 * `redis[name](...args)` (strings as UTF-8); send it with `redis.sendCommand`.
 * `errorStack`: ioredis's showFriendlyErrorStack (the caller's stack).
 */
export function encodedCommand(
  name: string,
  args: RespArg[],
  errorStack: Error | undefined,
): Command {
  // Arguments set after the constructor, which would copy them (args.flat()).
  const command = new EncodedCommand(name, [], { replyEncoding: "utf8", errorStack });
  command.args = args;
  return command;
}

/**
 * `parts` joined in one array of their total length: an array literal with
 * spreads grows, and copies, as it is filled (about 1 KB of garbage per
 * script call's arguments).
 */
export function joined<T>(...parts: readonly (readonly T[])[]): T[] {
  let length = 0;
  for (const part of parts) length += part.length;
  const all = new Array<T>(length);
  let at = 0;
  for (const part of parts) for (const v of part) all[at++] = v;
  return all;
}

/** Where commands are assembled before their bytes are copied out; grows as needed. */
let scratch = Buffer.allocUnsafeSlow(16 * 1024);

/**
 * Strings up to this many UTF-16 units are measured and, when ASCII, copied
 * by a loop here; longer ones by Buffer's native calls (two per string).
 */
const shortString = 64;

/**
 * The RESP bytes of `name` with `args` (an array of bulk strings), as
 * ioredis writes them: numbers in their decimal text, strings in UTF-8.
 * Written straight into a scratch buffer, then copied out once: no string
 * is built per command (building the text first and writing it once cost
 * about 7 KB of garbage per transition's call, the worker's largest share
 * of its allocation per job).
 */
export function encodeCommand(name: string, args: readonly RespArg[]): Buffer {
  // An upper bound of the size: UTF-8 takes at most 3 bytes per UTF-16 unit,
  // and each bulk string's head and tail at most 16.
  let bound = 32 + name.length * 3;
  for (const arg of args) {
    bound +=
      16 + (typeof arg === "string" ? arg.length * 3 : typeof arg === "number" ? 24 : arg.length);
  }
  if (bound > scratch.length) scratch = Buffer.allocUnsafeSlow(Math.max(bound, scratch.length * 2));
  const out = scratch;
  out[0] = 0x2a; // "*"
  let at = writeCrlf(out, writeDecimal(out, 1, args.length + 1));
  at = writeString(out, at, name);
  for (const arg of args) {
    if (typeof arg === "string") {
      at = writeString(out, at, arg);
    } else if (typeof arg === "number") {
      at = Number.isSafeInteger(arg)
        ? writeInteger(out, at, arg)
        : writeString(out, at, String(arg));
    } else {
      at = writeHead(out, at, arg.length);
      at += arg.copy(out, at);
      at = writeCrlf(out, at);
    }
  }
  const bytes = Buffer.allocUnsafe(at);
  out.copy(bytes, 0, 0, at);
  return bytes;
}

/** Writes `s` as a bulk string at `at`; returns the offset after it. */
function writeString(out: Buffer, at: number, s: string): number {
  const n = s.length;
  if (n <= shortString) {
    // Copied as if ASCII (its UTF-8 length then is `n`) behind its head, until a unit that is not.
    const start = at + (n < 10 ? 4 : n < 100 ? 5 : 6);
    let i = 0;
    for (; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c > 0x7f) break;
      out[start + i] = c;
    }
    if (i === n) {
      writeHead(out, at, n);
      return writeCrlf(out, start + n);
    }
  }
  const p = writeHead(out, at, Buffer.byteLength(s));
  return writeCrlf(out, p + out.write(s, p));
}

/** Writes a safe integer as a bulk string (its decimal text). */
function writeInteger(out: Buffer, at: number, value: number): number {
  const digits = value < 0 ? decimalLength(-value) + 1 : decimalLength(value);
  const p = writeHead(out, at, digits);
  return writeCrlf(out, writeDecimal(out, p, value));
}

/** Writes a bulk string's head ("$<length>\r\n"). */
function writeHead(out: Buffer, at: number, length: number): number {
  out[at] = 0x24; // "$"
  return writeCrlf(out, writeDecimal(out, at + 1, length));
}

function writeCrlf(out: Buffer, at: number): number {
  out[at] = 0x0d;
  out[at + 1] = 0x0a;
  return at + 2;
}

/** Writes a safe integer's decimal text at `at`; returns the offset after it. */
function writeDecimal(out: Buffer, at: number, value: number): number {
  if (value >= 0 && value < 10) {
    out[at] = 0x30 + value;
    return at + 1;
  }
  let v = value;
  let p = at;
  if (v < 0) {
    out[p++] = 0x2d; // "-"
    v = -v;
  }
  const end = p + decimalLength(v);
  for (let i = end - 1; i >= p; i--) {
    out[i] = 0x30 + (v % 10);
    v = Math.floor(v / 10);
  }
  return end;
}

/** Digits of a non-negative safe integer. */
function decimalLength(value: number): number {
  let digits = 1;
  for (let v = value; v >= 10; v = Math.floor(v / 10)) digits++;
  return digits;
}
