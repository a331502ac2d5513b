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

/** Where commands are assembled before their bytes are copied out; grows as needed. */
let scratch = Buffer.allocUnsafeSlow(16 * 1024);

/**
 * The RESP bytes of `name` with `args` (an array of bulk strings), as
 * ioredis writes them: numbers in their decimal text, strings in UTF-8.
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
  // Text waiting to be written: the command's heads and string arguments up
  // to the next Buffer argument.
  let text = `*${args.length + 1}\r\n$${Buffer.byteLength(name)}\r\n${name}\r\n`;
  let at = 0;
  for (const arg of args) {
    if (typeof arg === "string") {
      text += `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`;
    } else if (typeof arg === "number") {
      const s = String(arg);
      text += `$${s.length}\r\n${s}\r\n`;
    } else {
      text += `$${arg.length}\r\n`;
      at += out.write(text, at);
      at += arg.copy(out, at);
      text = "\r\n";
    }
  }
  at += out.write(text, at);
  return Buffer.from(out.subarray(0, at));
}
