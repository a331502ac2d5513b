/**
 * The load process's HTTP/1.1 client (bench/http1-client.ts, behind
 * lean-clients.ts' JSON submits and status reads): a node:http server sees
 * from it what it sees from node:http's own request with a keep-alive Agent
 * (method, target, raw headers in order, body) over many calls, whatever
 * the answers (Content-Length, chunked, `Connection: close`); answers split
 * byte by byte, joined, without a length, cut or malformed are read as
 * node:http reads them; and the real API and baseline answer it.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { type BaselineApi, createBaselineApi } from "../../bench/baselines/express-bullmq/api.js";
import { readBaselineConfig } from "../../bench/baselines/express-bullmq/config.js";
import { createHttp1Client, type Http1Request } from "../../bench/http1-client.js";
import {
  baselineStatus,
  baselineSubmit,
  connectGetJob,
  connectJsonSubmit,
} from "../../bench/lean-clients.js";
import { benchFilters } from "../../bench/load.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";

/** What the test server saw of one request. */
interface Seen {
  method: string;
  url: string;
  rawHeaders: string[];
  body: string;
  /** What the server answered: status and body. */
  answer: string;
}

/** The load clients' old path: node:http with a keep-alive Agent. */
function nodeRequest(
  agent: http.Agent,
  url: string,
  r: Http1Request,
  body: string | undefined,
): Promise<{ status: number; body: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        agent,
        host: u.hostname,
        port: Number(u.port),
        method: r.method,
        path: r.path,
        headers: r.headers,
      },
      (res) => {
        let data = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => {
          data += c;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: data }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

/** Runs `count` calls, `concurrency` at a time. */
async function inTurns(count: number, concurrency: number, call: (i: number) => Promise<void>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) await call(next++);
    }),
  );
}

const post: Http1Request = {
  method: "POST",
  path: "/reports.v1.ReportService/SubmitReport",
  headers: { "content-type": "application/json", "connect-protocol-version": "1" },
  hasBody: true,
};
const get: Http1Request = {
  method: "GET",
  path: `/reports.v1.ReportService/GetJob?connect=v1&encoding=json&message=${encodeURIComponent('{"jobId":"j-1"}')}`,
  headers: {},
  hasBody: false,
};

describe("createHttp1Client() against node:http", () => {
  let server: http.Server;
  let url: string;
  const seen: Seen[] = [];
  /** The open connections of the client under test, and their most at once. */
  const connections = new Set<net.Socket>();
  let peak = 0;

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      let body = "";
      req.setEncoding("utf8");
      req.on("data", (c: string) => {
        body += c;
      });
      req.on("end", () => {
        const i = seen.length;
        const answer = JSON.stringify({ jobId: `j-${i}`, echo: body, note: "ü" });
        res.statusCode = 200 + (i % 3);
        seen.push({
          method: req.method ?? "",
          url: req.url ?? "",
          rawHeaders: req.rawHeaders,
          body,
          answer: `${res.statusCode} ${answer}`,
        });
        // Every fifth answer closes its connection.
        if (i % 5 === 4) res.setHeader("Connection", "close");
        if (i % 2 === 0) {
          res.setHeader("Content-Length", Buffer.byteLength(answer));
          res.end(answer);
        } else {
          // No length: node:http sends it chunked, in two chunks.
          res.write(answer.slice(0, 7));
          res.end(answer.slice(7));
        }
      });
    });
    server.on("connection", (s) => {
      connections.add(s);
      peak = Math.max(peak, connections.size);
      s.on("close", () => connections.delete(s));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  });
  afterAll(() => {
    server.close();
  });

  for (const request of [post, get]) {
    it(`sends a ${request.method} as node:http sends it, whatever the answers`, async () => {
      const count = 300;
      const bodyOf = (i: number) =>
        request.hasBody ? `{"idempotencyKey":"key-${i}${"é".repeat(i % 4)}"}` : undefined;
      const agent = new http.Agent({ keepAlive: true, maxSockets: 10 });
      const old: { status: number; body: string }[] = [];
      try {
        await inTurns(count, 10, async (i) => {
          old[i] = await nodeRequest(agent, url, request, bodyOf(i));
        });
      } finally {
        agent.destroy();
      }
      const byNode = seen.splice(0);
      connections.clear();
      peak = 0;

      const client = createHttp1Client(url, 10, request);
      const lean: { status: number; body: string }[] = [];
      try {
        await inTurns(count, 10, async (i) => {
          lean[i] = await client.call(bodyOf(i));
        });
      } finally {
        client.close();
      }
      const byLean = seen.splice(0);

      expect(byLean).toHaveLength(count);
      const sorted = (s: Seen[]) =>
        s.map(({ answer: _, ...request }) => request).sort((a, b) => (a.body < b.body ? -1 : 1));
      // Method, target, raw headers (names, case, order, values) and body, call by call.
      expect(sorted(byLean)).toEqual(sorted(byNode));
      // Each client read every answer as the server sent it.
      const sent = (s: Seen[]) => s.map((x) => x.answer).sort();
      const read = (a: { status: number; body: string }[]) =>
        a.map((x) => `${x.status} ${x.body}`).sort();
      expect(read(old)).toEqual(sent(byNode));
      expect(read(lean)).toEqual(sent(byLean));
      // At most 10 connections at a time, as the Agent with maxSockets 10.
      expect(peak).toBeLessThanOrEqual(10);
    });
  }
});

/** A raw TCP server answering each whole request with `answer(i)`'s writes, in turn. */
interface Script {
  /** The answer's writes, each its own socket write. */
  writes: Buffer[];
  /** Then destroy the connection. */
  destroy?: boolean;
}

async function rawServer(answer: (i: number, request: string) => Script) {
  let n = 0;
  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    socket.on("error", () => undefined);
    let buffered = "";
    socket.on("data", async (d: Buffer) => {
      buffered += d.toString("latin1");
      const headEnd = buffered.indexOf("\r\n\r\n");
      if (headEnd < 0) return;
      const length = Number(/\r\ncontent-length: (\d+)/i.exec(buffered)?.[1] ?? 0);
      if (buffered.length < headEnd + 4 + length) return;
      const request = buffered;
      buffered = "";
      const script = answer(n++, request);
      for (const w of script.writes) {
        await new Promise<void>((resolve) => socket.write(w, () => setImmediate(resolve)));
      }
      if (script.destroy) socket.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    server,
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    close: () => server.close(),
  };
}

const bytes = (s: string) => [...Buffer.from(s)].map((b) => Buffer.from([b]));

describe("createHttp1Client() reading answers", () => {
  it("reads answers split byte by byte: Content-Length (any case) and chunked with extensions and trailers", async () => {
    const server = await rawServer((i) => {
      const body = `{"jobId":"j-${i}","note":"ü"}`;
      const answer =
        i % 2 === 0
          ? `HTTP/1.1 200 OK\r\nCONTENT-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
          : `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\n${body.slice(0, 5)}\r\n${Buffer.byteLength(body.slice(5)).toString(16)}\r\n${body.slice(5)}\r\n0\r\nX-Trailer: t\r\n\r\n`;
      return { writes: bytes(answer) };
    });
    const client = createHttp1Client(server.url, 3, post);
    try {
      const bodies: string[] = [];
      await inTurns(30, 3, async () => {
        const a = await client.call("{}");
        expect(a.status).toBe(200);
        bodies.push(a.body);
      });
      expect(bodies.sort()).toEqual(
        Array.from({ length: 30 }, (_, i) => `{"jobId":"j-${i}","note":"ü"}`).sort(),
      );
    } finally {
      client.close();
      server.close();
    }
  });

  it("skips an interim 100 joined with the answer, and reads a body that runs to the close", async () => {
    const server = await rawServer((i) =>
      i % 2 === 0
        ? {
            writes: [
              Buffer.from(
                `HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\ncontent-length: 5\r\n\r\nj-${i}..`,
              ),
            ],
          }
        : { writes: [Buffer.from(`HTTP/1.1 200 OK\r\n\r\nuntil-close-${i}`)], destroy: true },
    );
    const client = createHttp1Client(server.url, 1, get);
    try {
      for (let i = 0; i < 6; i++) {
        const a = await client.call();
        if (i % 2 === 0) expect(a).toEqual({ status: 202, body: `j-${i}..` });
        else expect(a).toEqual({ status: 200, body: `until-close-${i}` });
      }
    } finally {
      client.close();
      server.close();
    }
  });

  it("does not reuse a connection whose server times idle ones out within a second", async () => {
    let connections = 0;
    let n = 0;
    const server = await rawServer(() => ({
      writes: [
        Buffer.from(
          `HTTP/1.1 200 OK\r\nKeep-Alive: timeout=${n++ % 6 < 3 ? 1 : 5}\r\ncontent-length: 2\r\n\r\nok`,
        ),
      ],
    }));
    server.server.on("connection", () => connections++);
    // node:http's Agent first, for the connections it opens.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      for (let i = 0; i < 6; i++) {
        expect((await nodeRequest(agent, server.url, get, undefined)).body).toBe("ok");
      }
    } finally {
      agent.destroy();
    }
    const byNode = connections;
    connections = 0;
    const client = createHttp1Client(server.url, 1, get);
    try {
      for (let i = 0; i < 6; i++) expect((await client.call()).body).toBe("ok");
      // A new connection after each of the first three answers, then one reused.
      expect(connections).toBe(4);
      expect(connections).toBe(byNode);
    } finally {
      client.close();
      server.close();
    }
  });

  it("fails the call whose connection breaks or whose answer is not HTTP, and goes on", async () => {
    const server = await rawServer((i, request) => {
      if (request.includes("cut")) {
        return {
          writes: [Buffer.from("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")],
          destroy: true,
        };
      }
      if (request.includes("garbage")) return { writes: [Buffer.from("SMTP ready\r\n\r\n")] };
      return { writes: [Buffer.from(`HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok${i % 10}`)] };
    });
    const client = createHttp1Client(server.url, 1, post);
    try {
      await expect(client.call("cut")).rejects.toThrow(/closed inside the body/);
      await expect(client.call("garbage")).rejects.toThrow(/not an HTTP\/1.x status line/);
      expect((await client.call("fine")).body).toMatch(/^ok\d$/);
    } finally {
      client.close();
      server.close();
    }
    // Nothing listening: the call fails with the socket's error.
    const gone = createHttp1Client(server.url, 1, post);
    try {
      await expect(gone.call("{}")).rejects.toThrow(/ECONNREFUSED/);
    } finally {
      gone.close();
    }
  });
});

describe("the lean JSON clients against the real servers", () => {
  let t: TestApp;
  let baseline: BaselineApi;
  let baselineUrl: string;
  let artifactDir: string;

  beforeAll(async () => {
    t = await startTestApp({}, { mode: "api" });
    artifactDir = mkdtempSync(path.join(tmpdir(), "http1-client-baseline-"));
    baseline = createBaselineApi(
      readBaselineConfig({
        REDIS_URL: inject("redisUrl"),
        PORT: "0",
        BULL_PREFIX: `naive${randomBytes(4).toString("hex")}`,
        ARTIFACT_DIR: artifactDir,
      }),
    );
    baselineUrl = `http://127.0.0.1:${await baseline.listen()}`;
  });
  afterAll(async () => {
    await t?.close();
    await baseline?.close();
    rmSync(artifactDir, { recursive: true, force: true });
  });

  for (const design of ["ours", "baseline"] as const) {
    it(`submits to ${design} and reads the job back, and a repeated key fails`, async () => {
      const url = design === "ours" ? t.url : baselineUrl;
      const submit =
        design === "ours"
          ? connectJsonSubmit(url, 5, benchFilters)
          : baselineSubmit(url, 5, benchFilters);
      let ids: string[];
      try {
        ids = await Promise.all(
          Array.from({ length: 50 }, (_, i) => submit.call(`h1-${design}-${i}`)),
        );
        expect(new Set(ids).size).toBe(50);
        await expect(submit.call(`h1-${design}-0`)).rejects.toThrow(/deduplicated|HTTP/);
      } finally {
        submit.close();
      }
      const id = ids[7] as string;
      const status = design === "ours" ? connectGetJob(url, 3, id) : baselineStatus(url, 3, id);
      try {
        await Promise.all(Array.from({ length: 20 }, () => status.call()));
      } finally {
        status.close();
      }
      const missing =
        design === "ours" ? connectGetJob(url, 1, "nope") : baselineStatus(url, 1, "nope");
      try {
        await expect(missing.call()).rejects.toThrow(/HTTP 404/);
      } finally {
        missing.close();
      }
    });
  }
});
