/**
 * Requests that are not valid messages at all are the caller's fault on
 * every protocol: INVALID_ARGUMENT (HTTP 400), never INTERNAL or
 * UNIMPLEMENTED (connect-es's defaults for undecodable protobuf and malformed
 * streams; see src/api/parse-errors.ts).
 */
import http from "node:http";
import http2 from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestApp, type TestApp } from "../helpers/test-app.js";

const path = "/reports.v1.ReportService/GetJob";
/** A field tag with wire type 7, which does not exist: fromBinary throws. */
const badProto = Buffer.from([0x0f, 0x01]);
const envelope = (flags: number, data: Buffer) => {
  const head = Buffer.alloc(5);
  head[0] = flags;
  head.writeUInt32BE(data.length, 1);
  return Buffer.concat([head, data]);
};

function h1(url: string, contentType: string, body: Buffer, route = path) {
  return new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }>(
    (resolve, reject) => {
      const req = http.request(
        `${url}${route}`,
        { method: "POST", headers: { "content-type": contentType }, agent: false },
        (res) => {
          let text = "";
          res.setEncoding("latin1");
          res.on("data", (c: string) => {
            text += c;
          });
          res.on("end", () =>
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }),
          );
        },
      );
      req.on("error", reject);
      req.end(body);
    },
  );
}

function grpc(url: string, body: Buffer) {
  return new Promise<Record<string, string>>((resolve, reject) => {
    const session = http2.connect(url);
    session.on("error", reject);
    const stream = session.request({
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc",
      te: "trailers",
    });
    const out: Record<string, string> = {};
    stream.on("response", (h) => Object.assign(out, h));
    stream.on("trailers", (t) => Object.assign(out, t));
    stream.on("data", () => undefined);
    stream.on("end", () => {
      session.close();
      resolve(out);
    });
    stream.on("error", reject);
    stream.end(body);
  });
}

describe("malformed requests", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({}, { mode: "api" });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("Connect proto: an undecodable message is 400 invalid_argument", async () => {
    const res = await h1(t.url, "application/proto", badProto);
    expect(res.status).toBe(400);
    const json = JSON.parse(res.body) as { code: string; message: string };
    expect(json.code).toBe("invalid_argument");
    expect(json.message).toMatch(/^request message is not valid protobuf: /);
  });

  it("Connect streaming: an undecodable message ends the stream with invalid_argument", async () => {
    const res = await h1(
      t.url,
      "application/connect+proto",
      envelope(0, badProto),
      "/reports.v1.ReportService/WatchJob",
    );
    expect(res.body).toContain('"code":"invalid_argument"');
  });

  it("gRPC: an undecodable message, or none, is INVALID_ARGUMENT (3)", async () => {
    const bad = await grpc(t.url, envelope(0, badProto));
    expect(bad["grpc-status"]).toBe("3");
    expect(decodeURIComponent(bad["grpc-message"] ?? "")).toMatch(
      /^request message is not valid protobuf/,
    );
    const none = await grpc(t.url, Buffer.alloc(0));
    expect(none["grpc-status"]).toBe("3");
    const compressed = await grpc(t.url, envelope(1, badProto));
    expect(compressed["grpc-status"]).toBe("3");
  });

  it("gRPC-Web: an undecodable message is INVALID_ARGUMENT in the trailer frame", async () => {
    const res = await h1(t.url, "application/grpc-web+proto", envelope(0, badProto));
    expect(res.status).toBe(200);
    const status = res.headers["grpc-status"] ?? /grpc-status: *(\d+)/.exec(res.body)?.[1];
    expect(status).toBe("3");
  });
});
