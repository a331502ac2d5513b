/**
 * Span attribute names used by our own spans. The rpc.* and messaging.* names
 * follow the OpenTelemetry semantic conventions; they are copied here rather
 * than imported from the conventions' unstable "incubating" entry point, as
 * its authors recommend. BullMQ's names match its own spans, so a producer
 * span we make looks like one Queue.add would have made.
 */

/** rpc.system: "grpc" (gRPC and gRPC-Web) or "connect_rpc" (the Connect protocol). */
export const attrRpcSystem = "rpc.system";
/** rpc.service: the fully-qualified service, e.g. "reports.v1.ReportService". */
export const attrRpcService = "rpc.service";
/** rpc.method: the method name, e.g. "SubmitReport". */
export const attrRpcMethod = "rpc.method";
/** rpc.grpc.status_code: the numeric gRPC status (0 = OK), set for every protocol. */
export const attrRpcGrpcStatusCode = "rpc.grpc.status_code";
/** rpc.connect_rpc.error_code: the Connect error code ("not_found"), on errors of the Connect protocol. */
export const attrRpcConnectErrorCode = "rpc.connect_rpc.error_code";
/** error.type: the error's class, here the Connect code name, on failed calls. */
export const attrErrorType = "error.type";
/** Which of the three wire protocols carried the call: "grpc", "grpc_web" or "connect". */
export const attrRpcProtocol = "reports.rpc.protocol";

/** The job's id (our own namespace). */
export const attrJobId = "reports.job.id";
/** The report type: weekly, monthly or custom. */
export const attrReportType = "reports.report_type";
/** The tenant that owns the job. */
export const attrTenant = "reports.tenant";
/** 1-based attempt number. */
export const attrAttempt = "reports.job.attempt";
/** The generator phase a span covers (started, fetch-data, render, completed). */
export const attrPhase = "reports.job.phase";
/** True when SubmitReport returned an existing job (same idempotency key). */
export const attrDeduplicated = "reports.job.deduplicated";

/** BullMQ's own attribute names (bullmq/dist/esm/enums/telemetry-attributes.js). */
export const bullmqAttr = {
  queueName: "bullmq.queue.name",
  queueOperation: "bullmq.queue.operation",
  jobName: "bullmq.job.name",
  jobId: "bullmq.job.id",
} as const;

/** messaging.system for BullMQ spans. */
export const attrMessagingSystem = "messaging.system";
/** messaging.destination.name: the queue. */
export const attrMessagingDestination = "messaging.destination.name";
/** messaging.operation.type: "send" for the enqueue. */
export const attrMessagingOperationType = "messaging.operation.type";
