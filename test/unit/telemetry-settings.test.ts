import { describe, expect, it } from "vitest";
import { loadTelemetrySettings } from "../../src/config/config.js";
import { linkTo, traceIdOf } from "../../src/telemetry/trace-context.js";

describe("loadTelemetrySettings()", () => {
  it("names the service per mode unless OTEL_SERVICE_NAME (or the resource) names it", () => {
    expect(loadTelemetrySettings({}, "api").serviceName).toBe("report-jobs-api");
    expect(loadTelemetrySettings({}, "worker").serviceName).toBe("report-jobs-worker");
    expect(loadTelemetrySettings({}, "all").serviceName).toBe("report-jobs");
    expect(loadTelemetrySettings({}, undefined).serviceName).toBe("report-jobs");
    expect(loadTelemetrySettings({ MODE: "worker" }).serviceName).toBe("report-jobs-worker");
    expect(loadTelemetrySettings({ OTEL_SERVICE_NAME: "billing" }, "api").serviceName).toBe(
      "billing",
    );
    expect(
      loadTelemetrySettings({ OTEL_RESOURCE_ATTRIBUTES: "team=a,service.name=x" }, "api")
        .serviceName,
    ).toBeUndefined();
  });

  it("exports nothing unless an OTLP endpoint or an exporter is configured", () => {
    const none = loadTelemetrySettings({}, "api");
    expect(none.exportTraces).toBe(false);
    expect(none.exportMetricsOtlp).toBe(false);
    const both = loadTelemetrySettings({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318" }, "api");
    expect(both.exportTraces).toBe(true);
    expect(both.exportMetricsOtlp).toBe(true);
    const tracesOnly = loadTelemetrySettings(
      { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://c:4318/v1/traces" },
      "api",
    );
    expect([tracesOnly.exportTraces, tracesOnly.exportMetricsOtlp]).toEqual([true, false]);
    expect(loadTelemetrySettings({ OTEL_TRACES_EXPORTER: "console" }).exportTraces).toBe(true);
    expect(
      loadTelemetrySettings({
        OTEL_TRACES_EXPORTER: "none",
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://c",
      }).exportTraces,
    ).toBe(false);
    expect(
      loadTelemetrySettings({
        OTEL_METRICS_EXPORTER: "none",
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://c",
      }).exportMetricsOtlp,
    ).toBe(false);
  });

  it("respects OTEL_SDK_DISABLED and OTEL_METRIC_EXPORT_INTERVAL", () => {
    expect(loadTelemetrySettings({ OTEL_SDK_DISABLED: "TRUE" }).disabled).toBe(true);
    expect(loadTelemetrySettings({ OTEL_SDK_DISABLED: "false" }).disabled).toBe(false);
    expect(
      loadTelemetrySettings({ OTEL_METRIC_EXPORT_INTERVAL: "5000" }).metricExportIntervalMs,
    ).toBe(5000);
    expect(
      loadTelemetrySettings({ OTEL_METRIC_EXPORT_INTERVAL: "soon" }).metricExportIntervalMs,
    ).toBe(60_000);
  });
});

describe("traceIdOf() and linkTo()", () => {
  const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  it("reads the trace id of a traceparent; nothing from an invalid one", () => {
    expect(traceIdOf(tp)).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
    expect(traceIdOf(undefined)).toBe("");
    expect(traceIdOf("")).toBe("");
    expect(traceIdOf(`00-${"0".repeat(32)}-00f067aa0ba902b7-01`)).toBe("");
  });
  it("reads the second dash-separated part, as split('-')[1] does", () => {
    const reference = (t: string | undefined) => {
      const id = t?.split("-")[1] ?? "";
      return /^[0-9a-f]{32}$/.test(id) && id !== "0".repeat(32) ? id : "";
    };
    const id = "4bf92f3577b34da6a3ce929d0e0e4736";
    const cases = [
      tp,
      `00-${id}`,
      `-${id}`,
      `-${id}-`,
      id,
      `${id}-${id}`,
      `00-${id}x`,
      `00-${id}x-00f067aa0ba902b7-01`,
      `00-${id}0-00f067aa0ba902b7-01`,
      `00-${id.slice(1)}-00f067aa0ba902b7-01`,
      `00-${id.toUpperCase()}-00f067aa0ba902b7-01`,
      `00--${id}`,
      `00-${id}\n`,
      `00-${id.slice(0, 16)}-${id.slice(16)}`,
      "-",
      "--",
    ];
    for (const t of cases) expect(traceIdOf(t), t).toBe(reference(t));
  });
  it("links to the span a traceparent names", () => {
    expect(linkTo(tp).map((l) => l.context)).toEqual([
      {
        traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
        spanId: "00f067aa0ba902b7",
        traceFlags: 1,
        isRemote: true,
      },
    ]);
    expect(linkTo("garbage")).toEqual([]);
  });
});
