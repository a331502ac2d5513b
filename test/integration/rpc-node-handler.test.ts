/**
 * createRpcNodeHandler: what it answers that connect-node's adapter did not.
 */
import net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { startTestApp, type TestApp } from "../helpers/test-app.js";

/** Sends raw bytes on a new connection; answers everything read until the server closes it. */
function raw(url: string, bytes: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname, () => socket.write(bytes));
    let text = "";
    socket.setEncoding("utf8");
    socket.on("data", (c: string) => {
      text += c;
    });
    socket.on("close", () => resolve(text));
    socket.on("error", reject);
  });
}

describe("createRpcNodeHandler()", () => {
  let t: TestApp | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  it("answers 400 to an RPC request that names no host (HTTP/1.0), and keeps serving", async () => {
    t = await startTestApp();
    const answer = await raw(
      t.url,
      "POST /reports.v1.ReportService/GetJob HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
    );
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    const res = await fetch(`${t.url}/reports.v1.ReportService/GetJob`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jobId: "no-such-job" }),
    });
    expect(res.status).toBe(404);
  });
});
