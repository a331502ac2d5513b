/**
 * Mode all (`npm start`) with no exporter: AsyncLocalStorage, Workers without
 * BullMQ's telemetry; its job lines keep their trace and span ids
 * (helpers/unrecorded-traces.ts).
 */
import { describeUnrecordedJobTraces } from "../helpers/unrecorded-traces.js";

describeUnrecordedJobTraces("all");
