/**
 * createDualServer()'s rawStreamRoutes: HTTP/2 streams the route accepts are
 * served on the raw stream and never reach the handler (nor the HTTP/2
 * compatibility API), everything else does, and routed streams count under
 * the same stream caps.
 */
import type http from "node:http";
import http2 from "node:http2";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { createDualServer, type DualServer, type RawStreamRoute } from "../../src/api/server.js";
import { waitFor } from "../helpers/wait-for.js";

describe("createDualServer() rawStreamRoutes", () => {
  let server: DualServer | undefined;
  const sessions: http2.ClientHttp2Session[] = [];
  afterEach(async () => {
    for (const s of sessions.splice(0)) s.destroy();
    await server?.close(500);
    server = undefined;
  });

  /** A server whose handler answers "handler" and whose route holds /raw streams open after "raw". */
  async function start(maxStreamsPerAddress: number) {
    const handled: string[] = [];
    const routed: http2.ServerHttp2Stream[] = [];
    let closedRouted = 0;
    const route: RawStreamRoute = {
      accepts: (headers) => headers[":path"] === "/raw",
      serve(stream, _headers, closed) {
        // A raw stream: no compat request object exists for it.
        expect(stream.constructor.name).toBe("ServerHttp2Stream");
        routed.push(stream);
        stream.on("error", () => undefined);
        stream.once("close", () => {
          closedRouted++;
          closed();
        });
        stream.respond({ ":status": 200 });
        stream.write("raw");
      },
    };
    const handler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: unknown) => {
      handled.push(req.url ?? "");
      (res as http.ServerResponse).end("handler");
    };
    server = createDualServer(handler, {
      keepaliveMs: 30_000,
      logger: pino({ level: "silent" }),
      limits: { maxStreamsPerAddress },
      rawStreamRoutes: [route],
    });
    const { port } = await server.listen(0, "127.0.0.1");
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on("error", () => undefined);
    sessions.push(session);
    return {
      session,
      handled,
      routed,
      closedRouted: () => closedRouted,
    };
  }

  /** Opens `path`; resolves with the status and the first body bytes. */
  function open(session: http2.ClientHttp2Session, path: string) {
    const stream = session.request({ ":method": "POST", ":path": path });
    stream.on("error", () => undefined);
    stream.end();
    const answer = new Promise<{ status: number; body: string }>((resolve) => {
      let status = 0;
      stream.once("response", (h) => {
        status = Number(h[":status"]);
      });
      stream.once("data", (c: Buffer) => resolve({ status, body: c.toString() }));
      stream.once("end", () => resolve({ status, body: "" }));
    });
    return { stream, answer };
  }

  it("serves accepted streams on the raw stream, the rest through the handler", async () => {
    const t = await start(10);
    expect((await open(t.session, "/raw").answer).body).toBe("raw");
    expect((await open(t.session, "/other").answer).body).toBe("handler");
    expect(t.handled).toEqual(["/other"]);
    expect(t.routed).toHaveLength(1);
  });

  it("counts routed streams under the stream caps, and frees their place when they close", async () => {
    const t = await start(2);
    const a = open(t.session, "/raw");
    const b = open(t.session, "/raw");
    await Promise.all([a.answer, b.answer]);
    // Both places are taken by routed streams: the third stream is refused before the handler.
    const refused = await open(t.session, "/other").answer;
    expect(refused.status).toBe(503);
    expect(t.handled).toEqual([]);
    a.stream.close();
    await waitFor(() => t.closedRouted() === 1, { what: "the routed stream closed" });
    await waitFor(async () => (await open(t.session, "/other").answer).body === "handler", {
      what: "a free place",
    });
  });
});
