/**
 * A watch whose client deadline passes frees its subscription at once, over
 * every protocol, so abandoned watches do not pile up in the hub.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ReportType } from "../../gen/reports/v1/job_pb.js";
import { protocols, reportClient } from "../helpers/clients.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

describe("createReportService() watchJob deadlines", () => {
  let t: TestApp;
  beforeAll(async () => {
    // API only: nothing runs the job, so the watch would otherwise stay open.
    t = await startTestApp({}, { mode: "api" });
  });
  afterAll(async () => {
    await t.close();
  });

  for (const protocol of protocols) {
    it(`ends with DEADLINE_EXCEEDED and releases the subscription over ${protocol}`, async () => {
      const client = reportClient(protocol, t.url);
      const { jobId } = await client.submitReport({ userId: "u", reportType: ReportType.WEEKLY });
      const events: string[] = [];
      const began = Date.now();
      const err = await (async () => {
        for await (const res of client.watchJob({ jobId }, { timeoutMs: 400 })) {
          if (res.event) events.push(res.event.id);
        }
      })().then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
      expect(err?.code).toBe(Code.DeadlineExceeded);
      expect(Date.now() - began).toBeLessThan(5000);
      expect(events).toHaveLength(1); // the QUEUED event, before the deadline
      await waitFor(() => t.app.hub?.listenerCount === 0, {
        timeoutMs: 2000,
        what: "the hub to drop the watch",
      });
    });
  }
});
