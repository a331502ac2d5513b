/**
 * Jobs for the answer writers' tests and micro (job-json.ts, job-binary.ts):
 * a queued job as the submitter makes it, and the same job finished, as
 * jobToProto turns them into the Job message the writers are compared on.
 */
import { jobToProto } from "../../src/api/proto-mapping.js";
import type { JobView } from "../../src/domain/job.js";

/** A queued job as SubmitReport answers it. */
export const queuedJobView: JobView = {
  id: "ghks_CO-41LOULNf_5oJhw",
  tenant: "t",
  userId: "bench-user",
  reportType: "weekly",
  state: "queued",
  progress: 0,
  phase: "",
  attemptsMade: 0,
  maxAttempts: 5,
  failureReason: "",
  createdAt: 1796283424004,
  filters: { region: "eu", format: "csv" },
  priority: "normal",
  traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
};

/** The queued job finished on its second attempt, with its result and every timestamp. */
export function finishedJobProto(baseUrl: string): ReturnType<typeof jobToProto> {
  return jobToProto(
    {
      ...queuedJobView,
      state: "succeeded",
      progress: 100,
      phase: "done",
      attemptsMade: 2,
      startedAt: 1796283425000,
      finishedAt: 1796283426999,
      runAt: 1796283424000,
      deadline: 1796283500000,
      priority: "high",
      reportType: "custom",
      result: { downloadPath: "/d/x.csv", contentType: "text/csv", sizeBytes: 123456789 },
    },
    baseUrl,
  );
}
