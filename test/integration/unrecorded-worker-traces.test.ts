/**
 * A worker process that records no span (no exporter): no AsyncLocalStorage,
 * no BullMQ telemetry; its job lines keep their trace and span ids
 * (helpers/unrecorded-traces.ts).
 */
import { describeUnrecordedJobTraces } from "../helpers/unrecorded-traces.js";

describeUnrecordedJobTraces("worker");
