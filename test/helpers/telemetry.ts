/**
 * Starts this test process's OpenTelemetry SDK with an in-memory span
 * exporter. Import it FIRST in a test file (before the app), so the
 * instrumentations are in place before the modules they patch load. The SDK
 * registers global providers, which can happen once per process; vitest runs
 * each test file in its own process (pool: forks), so one call per file.
 */
import {
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import { loadTelemetrySettings } from "../../src/config/config.js";
import { startTelemetry, type Telemetry } from "../../src/telemetry/telemetry.js";

/** Every span ended in this process. */
export const spanExporter = new InMemorySpanExporter();

/** The started SDK (Prometheus reader included). */
export const telemetry: Telemetry = startTelemetry({
  settings: loadTelemetrySettings({ OTEL_SERVICE_NAME: "report-jobs-test" }, "all"),
  spanProcessors: [new SimpleSpanProcessor(spanExporter)],
});

/** Ended spans of `traceId`. */
export function spansOf(traceId: string): ReadableSpan[] {
  return spanExporter.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId);
}

/** The parent span id of `span` ("" for a root span). */
export function parentOf(span: ReadableSpan): string {
  return span.parentSpanContext?.spanId ?? "";
}
