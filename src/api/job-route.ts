/**
 * `GET /v1/jobs/{jobId}`: the job as proto JSON (the status URL SubmitReport
 * hands out), from the very same GetJob handler as the RPC.
 */
import { toJson } from "@bufbuild/protobuf";
import { JobSchema } from "../../gen/reports/v1/job_pb.js";
import type {
  GetJobRequestSchema,
  GetJobResponseSchema,
} from "../../gen/reports/v1/report_service_pb.js";
import { sendJson } from "./http-responses.js";
import { bridgedCall, type PathParams, type RouteHandler } from "./http-router.js";
import { type BridgedUnary, clientLeftSignal } from "./rpc-bridge.js";

/** Creates the handler over the bridged GetJob. */
export function createJobRoute(deps: {
  getJob: BridgedUnary<typeof GetJobRequestSchema, typeof GetJobResponseSchema>;
}): RouteHandler<PathParams<"/v1/jobs/{jobId}">> {
  return async (request) => {
    const left = clientLeftSignal(request.res);
    try {
      const { job } = await deps.getJob(
        { jobId: request.params.jobId },
        bridgedCall(request, left.signal),
      );
      // GetJob answers with the job or an error; an empty answer is a server bug (INTERNAL).
      if (job === undefined) throw new Error("GetJob answered without a job");
      sendJson(request.res, 200, toJson(JobSchema, job));
    } finally {
      left.done();
    }
  };
}
