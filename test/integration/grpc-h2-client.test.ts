/**
 * The load process's gRPC client (bench/grpc-h2-client.ts and lean-clients.ts'
 * grpcSubmit): a Node HTTP/2 server sees from it what it sees from Node's
 * own client (the headers and the message of every call), over one
 * connection past both flow-control windows; answers are checked (status,
 * trailers-only errors, resets); and SubmitReport against the real API.
 */
import http2 from "node:http2";
import type net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openGrpcH2Connection } from "../../bench/grpc-h2-client.js";
import { grpcSubmit } from "../../bench/lean-clients.js";
import { benchFilters } from "../../bench/load.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";

const requestHeaders = {
  ":method": "POST",
  ":path": "/test.v1.Test/Call",
  "content-type": "application/grpc",
  te: "trailers",
  "user-agent": "grpc-node-js/1.14.7",
  "grpc-accept-encoding": "identity,deflate,gzip",
  "accept-encoding": "identity",
};
const sessionOptions = { settings: { initialWindowSize: 65535 } };

/** What the test server saw of one stream. */
interface Seen {
  headers: Record<string, unknown>;
  body: Buffer;
}

function envelope(text: string): Buffer {
  const message = Buffer.from(text);
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  message.copy(frame, 5);
  return frame;
}

/** Headers without the pseudo-header Node adds per server stream. */
function plain(h: http2.IncomingHttpHeaders): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(h)) out[k] = v;
  return out;
}

describe("openGrpcH2Connection()", () => {
  let server: http2.Http2Server;
  let url: string;
  const seen: Seen[] = [];

  beforeAll(async () => {
    server = http2.createServer();
    server.on("stream", (stream, headers) => {
      stream.on("error", () => undefined);
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => {
        const body = Buffer.concat(chunks);
        seen.push({ headers: plain(headers), body });
        const text = body.subarray(5).toString();
        if (text === "reset") {
          stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
          return;
        }
        if (text === "not-found") {
          // A trailers-only answer.
          stream.respond(
            {
              ":status": 200,
              "content-type": "application/grpc",
              "grpc-status": "5",
              "grpc-message": "no such job",
            },
            { endStream: true },
          );
          return;
        }
        stream.respond(
          { ":status": 200, "content-type": "application/grpc" },
          {
            waitForTrailers: true,
          },
        );
        stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
        // An answer about four times the request, as a submit's: both windows run out.
        stream.end(envelope(`answer to ${text} `.repeat(12)));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  });
  afterAll(() => {
    server.close();
  });

  it("sends every call as Node's client sends it, past both flow-control windows", async () => {
    // Node's own client first, for what the server sees of it.
    const session = http2.connect(url, sessionOptions);
    await new Promise<void>((resolve, reject) => {
      const s = session.request(requestHeaders);
      s.on("error", reject);
      s.resume();
      s.on("close", resolve);
      s.end(envelope("node"));
    });
    session.close();
    const node = seen.shift() as Seen;

    const connection = await openGrpcH2Connection(url, requestHeaders, sessionOptions);
    try {
      // 1,500 calls of 60-odd bytes (over the server's 65,535-byte window) and
      // answers of about 300 (over ours), 50 in flight.
      let next = 0;
      const answers: string[] = [];
      await Promise.all(
        Array.from({ length: 50 }, async () => {
          while (next < 1500) {
            const i = next++;
            const a = await connection.call(envelope(`call-${i}-${"x".repeat(40)}`));
            expect(a.headers).toContainEqual([":status", "200"]);
            expect(a.trailers).toContainEqual(["grpc-status", "0"]);
            answers[i] = a.body.subarray(5, 40).toString();
          }
        }),
      );
      expect(answers[1499]).toBe(`answer to call-1499-${"x".repeat(15)}`);
      expect(seen).toHaveLength(1500);
      for (const s of seen) expect(s.headers).toEqual(node.headers);
      expect(seen.map((s) => s.body.subarray(5).toString()).sort()).toEqual(
        Array.from({ length: 1500 }, (_, i) => `call-${i}-${"x".repeat(40)}`).sort(),
      );
    } finally {
      connection.close();
      seen.length = 0;
    }
  });

  it("answers a trailers-only error with its status in the headers, and rejects a reset stream", async () => {
    const connection = await openGrpcH2Connection(url, requestHeaders, sessionOptions);
    try {
      const a = await connection.call(envelope("not-found"));
      expect(a.trailers).toEqual([]);
      expect(a.headers).toContainEqual(["grpc-status", "5"]);
      expect(a.headers).toContainEqual(["grpc-message", "no such job"]);
      await expect(connection.call(envelope("reset"))).rejects.toThrow(/stream reset \(code 2\)/);
      // The connection goes on.
      const b = await connection.call(envelope("after"));
      expect(b.trailers).toContainEqual(["grpc-status", "0"]);
    } finally {
      connection.close();
      seen.length = 0;
    }
  });
});

describe("grpcSubmit()", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ API_KEYS: "acme:k-h2-client-0123456789" }, { mode: "api" });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("submits over gRPC and answers each new job's id", async () => {
    const client = grpcSubmit(t.url, benchFilters, {
      authorization: "Bearer k-h2-client-0123456789",
    });
    try {
      const ids = await Promise.all(
        Array.from({ length: 100 }, (_, i) => client.call(`h2-client-${i}`)),
      );
      expect(new Set(ids).size).toBe(100);
      // The same key again is deduplicated: an error for a benchmark's unique keys.
      await expect(client.call("h2-client-0")).rejects.toThrow(/deduplicated/);
    } finally {
      client.close();
    }
  });

  it("rejects a call the API refuses, with its grpc-status and message", async () => {
    const client = grpcSubmit(t.url, benchFilters);
    try {
      await expect(client.call("h2-client-anonymous")).rejects.toThrow(/grpc-status 16/);
    } finally {
      client.close();
    }
  });
});
