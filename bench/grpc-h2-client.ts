/**
 * A lean HTTP/2 connection for unary gRPC calls, for the load process: the
 * bytes it sends are the ones Node's own HTTP/2 client (nghttp2, which
 * @grpc/grpc-js runs on) sends for the same headers and session options,
 * without the cost of Node's client per call (a ClientHttp2Stream, a Duplex
 * with its states, an AsyncResource with bound and deprecated accessors,
 * header objects in and out), which made the load process spend about 1.6
 * times what the HTTP/1.1 JSON callers spend per call, on the 2 cores the
 * measured service shares.
 *
 * How: at `open`, Node's client is run once against an in-process socket
 * that records what it writes for three calls: the connection preamble (the
 * preface and its SETTINGS), the HEADERS block of the first call (which
 * fills the HPACK dynamic table) and of the next calls (the same bytes every
 * time: indexed fields and the :path literal nghttp2 never indexes), and the
 * frame flags. Every call then writes those frames (HEADERS, then one DATA
 * frame with END_STREAM) with its own stream id and message, in stream id
 * order; nothing of the server's answer is assumed. The rest is HTTP/2 as a
 * client must speak it: SETTINGS and PING acknowledged, flow control both
 * ways (WINDOW_UPDATE once half the connection's receive window is used, as
 * nghttp2 does; calls wait for send window), the server's
 * MAX_CONCURRENT_STREAMS, RST_STREAM and GOAWAY, and the answers' headers
 * and trailers decoded with HPACK (hpack-decoder.ts).
 */
import http2 from "node:http2";
import net from "node:net";
import { type HeaderField, HpackDecoder } from "./hpack-decoder.js";

/** What the server answered on one call's stream. */
export interface GrpcAnswer {
  /** The response headers (a trailers-only answer has no trailers). */
  headers: HeaderField[];
  trailers: HeaderField[];
  /** The DATA bytes, envelopes included. */
  body: Buffer;
}

/** One HTTP/2 connection making unary gRPC calls with fixed request headers. */
export interface GrpcH2Connection {
  /** Sends one call whose DATA is `frame` (an enveloped message); resolves with the answer once the stream ends. */
  call(frame: Buffer): Promise<GrpcAnswer>;
  close(): void;
}

const FRAME_DATA = 0;
const FRAME_HEADERS = 1;
const FRAME_RST_STREAM = 3;
const FRAME_SETTINGS = 4;
const FRAME_PING = 6;
const FRAME_GOAWAY = 7;
const FRAME_WINDOW_UPDATE = 8;
const FRAME_CONTINUATION = 9;
const FLAG_END_STREAM = 0x1;
const FLAG_ACK = 0x1;
const FLAG_END_HEADERS = 0x4;
const FLAG_PADDED = 0x8;
const FLAG_PRIORITY = 0x20;
const SETTINGS_HEADER_TABLE_SIZE = 1;
const SETTINGS_MAX_CONCURRENT_STREAMS = 3;
const SETTINGS_INITIAL_WINDOW_SIZE = 4;
const SETTINGS_MAX_FRAME_SIZE = 5;
const defaultWindow = 65535;

/** What Node's client writes for a connection and its calls. */
interface Recording {
  /** The preface and the frames before the first HEADERS. */
  preamble: Buffer;
  firstBlock: Buffer;
  nextBlock: Buffer;
}

/** Records what Node's HTTP/2 client writes for `headers` on a new session (see the module comment). */
async function record(
  authorityUrl: string,
  headers: http2.OutgoingHttpHeaders,
  options: http2.ClientSessionOptions,
): Promise<Recording> {
  const chunks: Buffer[] = [];
  const sink = net.createServer((s) => s.on("data", (d: Buffer) => chunks.push(d)));
  await new Promise<void>((resolve) => sink.listen(0, "127.0.0.1", resolve));
  const port = (sink.address() as net.AddressInfo).port;
  const session = http2.connect(authorityUrl, {
    ...options,
    createConnection: () => net.connect(port, "127.0.0.1"),
  });
  session.on("error", () => undefined);
  const probe = Buffer.from([0, 0, 0, 0, 0]);
  try {
    for (let i = 0; i < 3; i++) {
      const stream = session.request(headers);
      stream.on("error", () => undefined);
      stream.end(probe);
    }
    // Until the three DATA frames are out (they follow the HEADERS).
    const deadline = Date.now() + 5000;
    for (;;) {
      const frames = parseFrames(Buffer.concat(chunks));
      if (frames.filter((f) => f.type === FRAME_DATA).length >= 3) break;
      if (Date.now() > deadline) throw new Error("grpc-h2-client: Node's client wrote no calls");
      await new Promise((r) => setTimeout(r, 5));
    }
  } finally {
    session.destroy();
    sink.close();
  }
  const all = Buffer.concat(chunks);
  const frames = parseFrames(all);
  const heads = frames.filter((f) => f.type === FRAME_HEADERS);
  const data = frames.filter((f) => f.type === FRAME_DATA);
  const [h1, h2, h3] = heads;
  if (h1 === undefined || h2 === undefined || h3 === undefined || heads.length !== 3) {
    throw new Error("grpc-h2-client: expected three HEADERS frames");
  }
  for (const h of heads) {
    if (h.flags !== FLAG_END_HEADERS) throw new Error(`grpc-h2-client: HEADERS flags ${h.flags}`);
  }
  for (const d of data) {
    if (d.flags !== FLAG_END_STREAM || !d.payload.equals(probe)) {
      throw new Error("grpc-h2-client: expected one DATA frame with END_STREAM per call");
    }
  }
  if (!h2.payload.equals(h3.payload)) {
    throw new Error("grpc-h2-client: the calls after the first do not share one header block");
  }
  return {
    preamble: all.subarray(0, h1.at),
    firstBlock: Buffer.from(h1.payload),
    nextBlock: Buffer.from(h2.payload),
  };
}

interface Frame {
  at: number;
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
}

/** The whole frames in `bytes` after the 24-byte client preface. */
function parseFrames(bytes: Buffer): Frame[] {
  const frames: Frame[] = [];
  let at = 24;
  while (at + 9 <= bytes.length) {
    const length = bytes.readUIntBE(at, 3);
    if (at + 9 + length > bytes.length) break;
    frames.push({
      at,
      type: bytes[at + 3] as number,
      flags: bytes[at + 4] as number,
      stream: bytes.readUInt32BE(at + 5) & 0x7fffffff,
      payload: bytes.subarray(at + 9, at + 9 + length),
    });
    at += 9 + length;
  }
  return frames;
}

/** One call in flight. */
class Call {
  headers: HeaderField[] | undefined = undefined;
  trailers: HeaderField[] = [];
  body: Buffer | undefined = undefined;
  /** DATA bytes received since this stream's last WINDOW_UPDATE. */
  unacked = 0;
  constructor(
    readonly resolve: (answer: GrpcAnswer) => void,
    readonly reject: (err: Error) => void,
  ) {}
}

/**
 * Opens a connection to `baseUrl` (http://host:port) whose calls send
 * `headers`, as Node's client with `options` would; resolves once Node's
 * bytes are recorded (the connection itself opens as the first call is written).
 */
export async function openGrpcH2Connection(
  baseUrl: string,
  headers: http2.OutgoingHttpHeaders,
  options: http2.ClientSessionOptions,
): Promise<GrpcH2Connection> {
  const recording = await record(baseUrl, headers, options);
  const url = new URL(baseUrl);
  const socket = net.connect(Number(url.port), url.hostname);
  socket.setNoDelay(true);
  const decoder = new HpackDecoder();
  const calls = new Map<number, Call>();
  /** Calls waiting for send window or a stream slot: their frame and call. */
  const waiting: { frame: Buffer; call: Call }[] = [];
  let nextStream = 1;
  let firstSent = false;
  let sendWindow = defaultWindow;
  let streamWindow = defaultWindow;
  let maxStreams = Number.POSITIVE_INFINITY;
  let maxFrameSize = 16384;
  let received = 0;
  let failure: Error | undefined;
  let pending: Buffer | undefined;
  /** The stream whose header block continues in CONTINUATION frames, and the block so far. */
  let continuing: { stream: number; flags: number; parts: Buffer[] } | undefined;
  let corked = false;

  const write = (bytes: Buffer) => {
    if (!corked) {
      corked = true;
      socket.cork();
      process.nextTick(uncork);
    }
    socket.write(bytes);
  };
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  const frameHeader = (length: number, type: number, flags: number, stream: number) => {
    const b = Buffer.allocUnsafe(9);
    b.writeUIntBE(length, 0, 3);
    b[3] = type;
    b[4] = flags;
    b.writeUInt32BE(stream, 5);
    return b;
  };
  write(recording.preamble);

  const send = (frame: Buffer, call: Call) => {
    const stream = nextStream;
    nextStream += 2;
    const block = firstSent ? recording.nextBlock : recording.firstBlock;
    firstSent = true;
    const out = Buffer.allocUnsafe(18 + block.length + frame.length);
    out.writeUIntBE(block.length, 0, 3);
    out[3] = FRAME_HEADERS;
    out[4] = FLAG_END_HEADERS;
    out.writeUInt32BE(stream, 5);
    block.copy(out, 9);
    const d = 9 + block.length;
    out.writeUIntBE(frame.length, d, 3);
    out[d + 3] = FRAME_DATA;
    out[d + 4] = FLAG_END_STREAM;
    out.writeUInt32BE(stream, d + 5);
    frame.copy(out, d + 9);
    sendWindow -= frame.length;
    calls.set(stream, call);
    write(out);
  };
  const canSend = (frame: Buffer) =>
    frame.length <= sendWindow &&
    frame.length <= streamWindow &&
    frame.length <= maxFrameSize &&
    calls.size < maxStreams;
  const flushWaiting = () => {
    while (waiting.length > 0) {
      const next = waiting[0] as { frame: Buffer; call: Call };
      if (!canSend(next.frame)) return;
      waiting.shift();
      send(next.frame, next.call);
    }
  };

  const fail = (err: Error) => {
    failure ??= err;
    for (const call of calls.values()) call.reject(err);
    calls.clear();
    for (const w of waiting) w.call.reject(err);
    waiting.length = 0;
    socket.destroy();
  };
  socket.on("error", (err) => fail(err));
  socket.on("close", () => fail(new Error("grpc-h2-client: the connection closed")));

  const ended = (stream: number, call: Call) => {
    calls.delete(stream);
    if (call.headers === undefined) {
      call.reject(new Error("grpc-h2-client: the stream ended without headers"));
    } else {
      call.resolve({
        headers: call.headers,
        trailers: call.trailers,
        body: call.body ?? Buffer.alloc(0),
      });
    }
    flushWaiting();
  };
  const onHeaderBlock = (stream: number, flags: number, block: Buffer) => {
    // Decoded whatever the stream: the dynamic table must follow every block.
    const fields = decoder.decode(block);
    const call = calls.get(stream);
    if (call === undefined) return;
    if (call.headers === undefined) call.headers = fields;
    else call.trailers = fields;
    if (flags & FLAG_END_STREAM) ended(stream, call);
  };
  /** The payload of a frame with the PADDED flag, without its padding. */
  const unpadded = (flags: number, payload: Buffer): Buffer => {
    if ((flags & FLAG_PADDED) === 0) return payload;
    const pad = payload[0] as number;
    return payload.subarray(1, payload.length - pad);
  };
  const onFrame = (type: number, flags: number, stream: number, payload: Buffer) => {
    if (continuing !== undefined && type !== FRAME_CONTINUATION) {
      throw new Error("grpc-h2-client: a header block was interrupted");
    }
    switch (type) {
      case FRAME_DATA: {
        // Flow control counts the whole payload, padding included.
        received += payload.length;
        if (received >= defaultWindow / 2) {
          const wu = frameHeader(4, FRAME_WINDOW_UPDATE, 0, 0);
          write(Buffer.concat([wu, uint32(received)]));
          received = 0;
        }
        const call = calls.get(stream);
        if (call === undefined) return;
        const data = unpadded(flags, payload);
        call.body = call.body === undefined ? Buffer.from(data) : Buffer.concat([call.body, data]);
        call.unacked += payload.length;
        if (flags & FLAG_END_STREAM) {
          ended(stream, call);
        } else if (call.unacked >= defaultWindow / 2) {
          write(
            Buffer.concat([frameHeader(4, FRAME_WINDOW_UPDATE, 0, stream), uint32(call.unacked)]),
          );
          call.unacked = 0;
        }
        return;
      }
      case FRAME_HEADERS: {
        let block = unpadded(flags, payload);
        if (flags & FLAG_PRIORITY) block = block.subarray(5);
        if (flags & FLAG_END_HEADERS) onHeaderBlock(stream, flags, block);
        else continuing = { stream, flags, parts: [Buffer.from(block)] };
        return;
      }
      case FRAME_CONTINUATION: {
        if (continuing === undefined || continuing.stream !== stream) {
          throw new Error("grpc-h2-client: unexpected CONTINUATION");
        }
        continuing.parts.push(Buffer.from(payload));
        if (flags & FLAG_END_HEADERS) {
          const c = continuing;
          continuing = undefined;
          onHeaderBlock(c.stream, c.flags, Buffer.concat(c.parts));
        }
        return;
      }
      case FRAME_RST_STREAM: {
        const call = calls.get(stream);
        if (call === undefined) return;
        calls.delete(stream);
        call.reject(new Error(`stream reset (code ${payload.readUInt32BE(0)})`));
        flushWaiting();
        return;
      }
      case FRAME_SETTINGS: {
        if (flags & FLAG_ACK) return;
        for (let at = 0; at + 6 <= payload.length; at += 6) {
          const id = payload.readUInt16BE(at);
          const value = payload.readUInt32BE(at + 2);
          if (id === SETTINGS_HEADER_TABLE_SIZE && value < 4096) {
            // The recorded blocks were encoded for a 4096-byte table.
            throw new Error(`grpc-h2-client: the server's header table is ${value} bytes`);
          }
          if (id === SETTINGS_MAX_CONCURRENT_STREAMS) maxStreams = value;
          if (id === SETTINGS_INITIAL_WINDOW_SIZE) streamWindow = value;
          if (id === SETTINGS_MAX_FRAME_SIZE) maxFrameSize = value;
        }
        write(frameHeader(0, FRAME_SETTINGS, FLAG_ACK, 0));
        flushWaiting();
        return;
      }
      case FRAME_PING: {
        if (flags & FLAG_ACK) return;
        write(Buffer.concat([frameHeader(8, FRAME_PING, FLAG_ACK, 0), payload]));
        return;
      }
      case FRAME_GOAWAY: {
        fail(new Error(`grpc-h2-client: GOAWAY (code ${payload.readUInt32BE(4)})`));
        return;
      }
      case FRAME_WINDOW_UPDATE: {
        const increment = payload.readUInt32BE(0) & 0x7fffffff;
        if (stream === 0) sendWindow += increment;
        flushWaiting();
        return;
      }
      default:
        // PRIORITY, PUSH_PROMISE (push is off), unknown types: nothing to do.
        return;
    }
  };
  socket.on("data", (chunk: Buffer) => {
    let bytes = pending === undefined ? chunk : Buffer.concat([pending, chunk]);
    pending = undefined;
    let at = 0;
    try {
      while (at + 9 <= bytes.length) {
        const length = bytes.readUIntBE(at, 3);
        const end = at + 9 + length;
        if (end > bytes.length) break;
        onFrame(
          bytes[at + 3] as number,
          bytes[at + 4] as number,
          bytes.readUInt32BE(at + 5) & 0x7fffffff,
          bytes.subarray(at + 9, end),
        );
        at = end;
      }
    } catch (err) {
      fail(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    if (at < bytes.length) {
      bytes = bytes.subarray(at);
      pending = Buffer.from(bytes);
    }
  });

  return {
    call(frame) {
      return new Promise((resolve, reject) => {
        if (failure !== undefined) {
          reject(failure);
          return;
        }
        const call = new Call(resolve, reject);
        if (waiting.length === 0 && canSend(frame)) send(frame, call);
        else waiting.push({ frame, call });
      });
    },
    close() {
      fail(new Error("grpc-h2-client: closed"));
    },
  };
}

function uint32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n, 0);
  return b;
}
