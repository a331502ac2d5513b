/**
 * createDualServer's `uninstrumented` option: HTTP/1.1 requests it names are
 * dispatched beneath whatever is patched into http.Server#emit (as
 * OpenTelemetry's HTTP instrumentation patches it), the others through it.
 */
import http from "node:http";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { createDualServer, type DualServer } from "../../src/api/server.js";

describe("createDualServer() uninstrumented", () => {
  let server: DualServer | undefined;
  const original = http.Server.prototype.emit;
  afterEach(async () => {
    http.Server.prototype.emit = original;
    await server?.close(500);
    server = undefined;
  });

  it("hands the requests it names to the handler without the patched http.Server emit", async () => {
    // An instrumentation's patch: sees every "request" event it is given.
    const seen: string[] = [];
    http.Server.prototype.emit = function (
      this: http.Server,
      event: string | symbol,
      ...args: unknown[]
    ) {
      if (event === "request") seen.push((args[0] as http.IncomingMessage).url ?? "");
      return Reflect.apply(original, this, [event, ...args]);
    } as typeof original;
    const handled: string[] = [];
    server = createDualServer(
      (req, res) => {
        handled.push(req.url ?? "");
        res.writeHead(200, { "content-type": "text/plain" });
        res.end("ok");
      },
      {
        keepaliveMs: 30_000,
        logger: pino({ level: "silent" }),
        uninstrumented: (url) => url.startsWith("/rpc.Service/"),
      },
    );
    const { port } = await server.listen(0, "127.0.0.1");
    for (const path of ["/rpc.Service/Method", "/v1/plain", "/rpc.Service/Method?x=1"]) {
      const res = await fetch(`http://127.0.0.1:${port}${path}`);
      expect(res.status).toBe(200);
      expect(await res.text()).toBe("ok");
    }
    expect(handled).toEqual(["/rpc.Service/Method", "/v1/plain", "/rpc.Service/Method?x=1"]);
    expect(seen).toEqual(["/v1/plain"]);
  });
});
