/**
 * A lean HTTP/1.1 client for the load process: keep-alive connections on
 * node:net sockets, one request in flight on each and at most `concurrency`
 * of them (what an http.Agent with `keepAlive` and `maxSockets` does, no
 * pipelining), each request written in one socket write with the bytes
 * node:http writes for the same call. It spares the load process node:http's
 * cost per call (a ClientRequest and an IncomingMessage, both streams, the
 * Agent's bookkeeping, llhttp's callbacks, header objects): 30-52 µs of
 * CPU per call on the 2 cores the measured servers share, 11-22 with this
 * client (docs/performance.md, Callers).
 *
 * How: when the client opens, node:http is run once against an in-process
 * socket that records what it writes for the request (with a probe body when
 * the request has one): the request line, the caller's headers in their
 * order, Host, `Connection: keep-alive` and `Content-Length`. Each call then
 * writes those bytes with its own Content-Length and body. Answers are read
 * as node:http reads them: the status line, headers (names in any case),
 * a Content-Length, chunked or until-close body (none for 1xx, 204, 304),
 * interim 1xx answers skipped, bytes split across or joined in TCP chunks;
 * `Connection: close` (or an HTTP/1.0 answer without keep-alive, or a
 * `Keep-Alive: timeout` of 1 s or less, which the Agent does not reuse)
 * ends the connection after its answer and the next call opens a new one;
 * idle connections stay open until the server closes them; a socket
 * error, or the connection closing before the answer is whole, fails the
 * call in flight, as it fails node:http's request.
 */
import http from "node:http";
import net from "node:net";

/** One request as node:http would be asked for it. */
export interface Http1Request {
  method: string;
  /** The request target: path and query. */
  path: string;
  /** The caller's headers, in order (node:http adds Host, Connection and Content-Length). */
  headers: Record<string, string>;
  /** Whether calls send a body (then `call` takes it). */
  hasBody: boolean;
}

/** What the server answered. */
export interface Http1Answer {
  status: number;
  /** The body, decoded as UTF-8. */
  body: string;
}

/** Keep-alive connections making one kind of request. */
export interface Http1Client {
  /** Sends the request (with `body` when it has one); resolves with the answer. */
  call(body?: string): Promise<Http1Answer>;
  /** Ends every connection; calls in flight or waiting fail. */
  close(): void;
}

/** The bytes node:http writes for a request: `head` with the Content-Length value cut out. */
interface Recording {
  /** Up to the Content-Length value (the whole head when there is no body). */
  before: string;
  /** From after the Content-Length value to the end of the head. */
  after: string;
}

const probeBody = '{"probe":"0123456789"}';

/** Records what node:http writes for `request` to `target` (see the module comment). */
async function record(
  target: { host: string; port: number },
  request: Http1Request,
): Promise<Recording> {
  const chunks: Buffer[] = [];
  let complete: () => void = () => undefined;
  const whole = new Promise<void>((resolve) => {
    complete = resolve;
  });
  const sink = net.createServer((s) =>
    s.on("data", (d: Buffer) => {
      chunks.push(d);
      const bytes = Buffer.concat(chunks);
      const headEnd = bytes.indexOf("\r\n\r\n");
      const bodyBytes = request.hasBody ? Buffer.byteLength(probeBody) : 0;
      if (headEnd >= 0 && bytes.length >= headEnd + 4 + bodyBytes) complete();
    }),
  );
  await new Promise<void>((resolve) => sink.listen(0, "127.0.0.1", resolve));
  const sinkPort = (sink.address() as net.AddressInfo).port;
  // The Agent the load clients used: keep-alive, so node:http asks for it.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  agent.createConnection = () => net.connect(sinkPort, "127.0.0.1");
  try {
    const req = http.request({
      agent,
      host: target.host,
      port: target.port,
      method: request.method,
      path: request.path,
      headers: request.headers,
    });
    req.on("error", () => undefined);
    req.end(request.hasBody ? probeBody : undefined);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      whole,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error("http1-client: node:http wrote no request")),
          5000,
        );
      }),
    ]);
    clearTimeout(timer);
  } finally {
    agent.destroy();
    sink.close();
  }
  const bytes = Buffer.concat(chunks);
  const headEnd = bytes.indexOf("\r\n\r\n") + 4;
  const head = bytes.toString("latin1", 0, headEnd);
  const body = bytes.toString("utf8", headEnd);
  if (/\r\ntransfer-encoding:/i.test(head)) {
    throw new Error("http1-client: node:http sent a chunked request");
  }
  if (!request.hasBody) {
    if (/\r\ncontent-length:/i.test(head) || body !== "") {
      throw new Error("http1-client: node:http sent a body for a request without one");
    }
    return { before: head, after: "" };
  }
  const lengthField = `\r\nContent-Length: ${Buffer.byteLength(probeBody)}\r\n`;
  const at = head.indexOf(lengthField);
  if (at < 0 || head.match(/\r\ncontent-length:/gi)?.length !== 1 || body !== probeBody) {
    throw new Error(`http1-client: unexpected request from node:http: ${head}`);
  }
  const valueAt = at + lengthField.indexOf(":") + 2;
  return {
    before: head.slice(0, valueAt),
    after: head.slice(valueAt + String(Buffer.byteLength(probeBody)).length),
  };
}

/** A parsed answer, and where it ends in the bytes read. */
interface Parsed {
  answer: Http1Answer;
  keepAlive: boolean;
  end: number;
}

const statusLine = /^HTTP\/1\.([01]) (\d{3})(?: |$)/;
const maxHead = 64 * 1024;

/** Thrown for bytes that are no HTTP/1.1 answer. */
class ProtocolError extends Error {}

/**
 * The first whole answer in `bytes` (interim 1xx answers skipped), or
 * undefined while more bytes are needed; `eof` once the server has closed
 * (a body without a length ends there).
 */
function parseAnswer(bytes: Buffer, eof: boolean): Parsed | undefined {
  let start = 0;
  for (;;) {
    const headEnd = bytes.indexOf("\r\n\r\n", start, "latin1");
    if (headEnd < 0) {
      if (bytes.length - start > maxHead) throw new ProtocolError("answer head too long");
      if (eof) throw new ProtocolError("the connection closed before the answer's head");
      return undefined;
    }
    const lines = bytes.toString("latin1", start, headEnd).split("\r\n");
    const m = statusLine.exec(lines[0] as string);
    if (m === null) throw new ProtocolError(`not an HTTP/1.x status line: ${lines[0]}`);
    const minor = m[1] as string;
    const status = Number(m[2]);
    let contentLength: number | undefined;
    let chunked = false;
    let close = minor === "0";
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i] as string;
      const colon = line.indexOf(":");
      if (colon <= 0 || line.charCodeAt(0) <= 32) {
        throw new ProtocolError(`malformed header line: ${line}`);
      }
      const name = line.slice(0, colon).toLowerCase();
      const value = line.slice(colon + 1).trim();
      if (name === "content-length") {
        if (!/^\d+$/.test(value)) throw new ProtocolError(`bad content-length: ${value}`);
        const n = Number(value);
        if (contentLength !== undefined && contentLength !== n) {
          throw new ProtocolError("conflicting content-length");
        }
        contentLength = n;
      } else if (name === "transfer-encoding") {
        chunked = /(?:^|,)\s*chunked\s*$/i.test(value);
      } else if (name === "connection") {
        for (const token of value.toLowerCase().split(",")) {
          const t = token.trim();
          if (t === "close") close = true;
          else if (t === "keep-alive" && minor === "0") close = false;
        }
      } else if (name === "keep-alive") {
        // As the Agent: a server's idle timeout of a second or less is too
        // short to reuse the connection safely (it never times idle ones out).
        const hint = /^timeout=(\d+)/.exec(value)?.[1];
        if (hint !== undefined && Number(hint) <= 1) close = true;
      }
    }
    const bodyAt = headEnd + 4;
    if (status >= 100 && status < 200) {
      if (status === 101) throw new ProtocolError("unexpected 101 Switching Protocols");
      start = bodyAt;
      continue;
    }
    if (status === 204 || status === 304) {
      return { answer: { status, body: "" }, keepAlive: !close, end: bodyAt };
    }
    if (chunked) {
      const parts: Buffer[] = [];
      let at = bodyAt;
      for (;;) {
        const lineEnd = bytes.indexOf("\r\n", at, "latin1");
        if (lineEnd < 0) break;
        const sizeText = bytes.toString("latin1", at, lineEnd).split(";")[0]?.trim() ?? "";
        if (!/^[0-9a-fA-F]{1,8}$/.test(sizeText)) {
          throw new ProtocolError(`bad chunk size: ${sizeText}`);
        }
        const size = Number.parseInt(sizeText, 16);
        if (size === 0) {
          // Trailer fields, if any, then an empty line.
          let t = lineEnd + 2;
          for (;;) {
            const e = bytes.indexOf("\r\n", t, "latin1");
            if (e < 0) break;
            if (e === t) {
              const body = Buffer.concat(parts).toString("utf8");
              return { answer: { status, body }, keepAlive: !close, end: e + 2 };
            }
            t = e + 2;
          }
          break;
        }
        const dataEnd = lineEnd + 2 + size;
        if (bytes.length < dataEnd + 2) break;
        if (bytes[dataEnd] !== 13 || bytes[dataEnd + 1] !== 10) {
          throw new ProtocolError("a chunk does not end with CRLF");
        }
        parts.push(bytes.subarray(lineEnd + 2, dataEnd));
        at = dataEnd + 2;
      }
      if (eof) throw new ProtocolError("the connection closed inside a chunked body");
      return undefined;
    }
    if (contentLength !== undefined) {
      const end = bodyAt + contentLength;
      if (bytes.length < end) {
        if (eof) throw new ProtocolError("the connection closed inside the body");
        return undefined;
      }
      const body = bytes.toString("utf8", bodyAt, end);
      return { answer: { status, body }, keepAlive: !close, end };
    }
    // No length: the body runs until the server closes.
    if (!eof) return undefined;
    return {
      answer: { status, body: bytes.toString("utf8", bodyAt) },
      keepAlive: false,
      end: bytes.length,
    };
  }
}

/** A call: its bytes and its promise. */
interface Call {
  bytes: string;
  resolve: (answer: Http1Answer) => void;
  reject: (err: Error) => void;
}

/** One keep-alive connection and the call in flight on it. */
class Connection {
  readonly socket: net.Socket;
  call: Call | undefined = undefined;
  /** Bytes of the answer read so far, when it came in more than one chunk. */
  pending: Buffer | undefined = undefined;
  closed = false;

  constructor(
    port: number,
    host: string,
    readonly onFree: (c: Connection) => void,
    readonly onClosed: (c: Connection) => void,
  ) {
    this.socket = net.connect(port, host);
    // As http.Agent sets it.
    this.socket.setNoDelay(true);
    this.socket.on("data", (chunk: Buffer) => this.read(chunk, false));
    this.socket.on("end", () => this.read(Buffer.alloc(0), true));
    this.socket.on("error", (err) => this.end(err));
    this.socket.on("close", () => this.end(new Error("socket hang up")));
  }

  send(call: Call): void {
    this.call = call;
    this.socket.write(call.bytes);
  }

  private read(chunk: Buffer, eof: boolean): void {
    const call = this.call;
    if (call === undefined) {
      // Bytes with no call in flight, or the server closing an idle connection.
      this.end(eof ? undefined : new ProtocolError("bytes with no request in flight"));
      return;
    }
    const bytes = this.pending === undefined ? chunk : Buffer.concat([this.pending, chunk]);
    let parsed: Parsed | undefined;
    try {
      parsed = parseAnswer(bytes, eof);
    } catch (err) {
      this.end(err as Error);
      return;
    }
    if (parsed === undefined) {
      this.pending = bytes;
      return;
    }
    this.pending = undefined;
    this.call = undefined;
    if (parsed.end < bytes.length) {
      // No pipelining: nothing may follow an answer before the next request.
      call.resolve(parsed.answer);
      this.end(new ProtocolError("bytes after the answer"));
      return;
    }
    if (!parsed.keepAlive || eof) {
      this.end(undefined);
      call.resolve(parsed.answer);
      return;
    }
    call.resolve(parsed.answer);
    this.onFree(this);
  }

  /** Closes the connection; the call in flight fails with `err` (or "socket hang up"). */
  end(err: Error | undefined): void {
    const call = this.call;
    this.call = undefined;
    if (call !== undefined) call.reject(err ?? new Error("socket hang up"));
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
    this.onClosed(this);
  }
}

/**
 * Opens a client of `request` to `baseUrl` (http://host:port) with at most
 * `concurrency` connections; calls beyond them wait their turn, as with an
 * http.Agent's `maxSockets`. Connections open as calls need them.
 */
export function createHttp1Client(
  baseUrl: string,
  concurrency: number,
  request: Http1Request,
): Http1Client {
  const url = new URL(baseUrl);
  const host = url.hostname;
  const port = Number(url.port || 80);
  const recording = record({ host, port }, request);
  recording.catch(() => undefined);
  let head: Recording | undefined;
  /** Idle connections, the last freed last (reused first, as the Agent's lifo scheduling). */
  const free: Connection[] = [];
  const waiting: Call[] = [];
  const all = new Set<Connection>();
  let closed = false;

  const onFree = (c: Connection) => {
    const next = waiting.shift();
    if (next !== undefined) c.send(next);
    else free.push(c);
  };
  const onClosed = (c: Connection) => {
    all.delete(c);
    const i = free.indexOf(c);
    if (i >= 0) free.splice(i, 1);
    const next = waiting.shift();
    if (next !== undefined) dispatch(next);
  };
  const dispatch = (call: Call) => {
    const c = free.pop();
    if (c !== undefined) {
      c.send(call);
    } else if (all.size < concurrency) {
      const created = new Connection(port, host, onFree, onClosed);
      all.add(created);
      created.send(call);
    } else {
      waiting.push(call);
    }
  };

  return {
    async call(body) {
      if (request.hasBody !== (body !== undefined)) {
        throw new Error(
          `http1-client: a ${request.method} ${request.hasBody ? "takes" : "has no"} body`,
        );
      }
      head ??= await recording;
      if (closed) throw new Error("http1-client: closed");
      const h = head;
      const bytes =
        body === undefined ? h.before : `${h.before}${Buffer.byteLength(body)}${h.after}${body}`;
      return new Promise<Http1Answer>((resolve, reject) => {
        dispatch({ bytes, resolve, reject });
      });
    },
    close() {
      closed = true;
      const err = new Error("http1-client: closed");
      for (const w of waiting.splice(0)) w.reject(err);
      free.length = 0;
      for (const c of [...all]) c.end(err);
    },
  };
}
