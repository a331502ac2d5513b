import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobState, ReportType } from "../../gen/reports/v1/job_pb.js";
import { protocols, reportClient } from "../helpers/clients.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

describe("smoke", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t.close();
  });
  for (const protocol of protocols) {
    it(`submits and completes over ${protocol}`, async () => {
      const client = reportClient(protocol, t.url);
      const res = await client.submitReport({ userId: "u1", reportType: ReportType.WEEKLY });
      const job = await waitFor(async () => {
        const { job } = await client.getJob({ jobId: res.jobId });
        return job?.state === JobState.SUCCEEDED ? job : undefined;
      });
      expect(job.progress).toBe(100);
    });
  }
});
