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

declare module "node:buffer" {
  interface Buffer {
    /** Node's Latin-1 writer (what `write(s, at, "latin1")` calls): the bytes written. */
    latin1Write(s: string, offset: number): number;
  }
}

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

/** Where commands are assembled before their bytes are copied out; grows as needed. */
let scratch = Buffer.allocUnsafeSlow(16 * 1024);

/**
 * The RESP bytes of `name` with `args` (an array of bulk strings), as
 * ioredis writes them: numbers in their decimal text, strings in UTF-8.
 *
 * Written straight into one scratch Buffer, each string measured once and
 * written by one native call: no string is built for the heads or joined
 * from the arguments (a submit's EVALSHA made about 8 KB of such garbage per
 * call when its text was concatenated).
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
  out[0] = 0x2a; // *
  let at = writeDecimal(out, 1, args.length + 1);
  at = writeBulkString(out, at, name);
  for (const arg of args) {
    if (typeof arg === "string") at = writeBulkString(out, at, arg);
    else if (typeof arg === "number") at = writeBulkString(out, at, String(arg));
    else {
      out[at] = 0x24; // $
      at = writeDecimal(out, at + 1, arg.length);
      out.set(arg, at);
      at += arg.length;
      out[at++] = 0x0d;
      out[at++] = 0x0a;
    }
  }
  return Buffer.from(out.subarray(0, at));
}

/** Writes `s` as a bulk string (`$<bytes>\r\n<UTF-8>\r\n`) at `at`; returns the end. */
function writeBulkString(out: Buffer, at: number, s: string): number {
  const bytes = Buffer.byteLength(s);
  out[at] = 0x24; // $
  at = writeDecimal(out, at + 1, bytes);
  // An ASCII string (as many bytes as units) is its Latin-1 bytes: the cheaper native write.
  at += bytes === s.length ? out.latin1Write(s, at) : out.write(s, at);
  out[at] = 0x0d;
  out[at + 1] = 0x0a;
  return at + 2;
}

/** Writes the non-negative integer `n` in decimal and CRLF at `at`; returns the end. */
function writeDecimal(out: Buffer, at: number, n: number): number {
  let digits = 1;
  for (let p = 10; p <= n; p *= 10) digits++;
  for (let i = at + digits - 1; i >= at; i--) {
    out[i] = 0x30 + (n % 10);
    n = Math.floor(n / 10);
  }
  at += digits;
  out[at] = 0x0d;
  out[at + 1] = 0x0a;
  return at + 2;
}
