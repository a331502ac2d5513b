/**
 * A browser client of reports.v1.ReportService over Connect-Web, with no
 * framework: submit a report, follow its events live with WatchJob, show the
 * progress and the download link. When a watch ends with UNAVAILABLE (the
 * server is shutting down, or the watch reached its maximum duration) or its
 * connection drops, it resumes from the last event id it saw, so no event is
 * shown twice or lost.
 *
 * Bundled by build.mjs into dist/main.js; see README.md.
 */
import { type JsonObject, type JsonValue, toJson } from "@bufbuild/protobuf";
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import {
  type JobEvent,
  JobEventType,
  JobSchema,
  JobState,
  ReportType,
} from "../../gen/reports/v1/job_pb.js";
import { ReportService } from "../../gen/reports/v1/report_service_pb.js";

/** What the page exposes on `window.reportsExample`, for the console and for tests. */
export interface ReportsExample {
  /** Base URL of the API this page talks to. */
  readonly apiUrl: string;
  /** GetJob over Connect-Web (a Connect GET request); the job in its JSON form. */
  getJob(jobId: string): Promise<JsonValue>;
}

declare global {
  interface Window {
    reportsExample?: ReportsExample;
  }
}

const params = new URLSearchParams(location.search);
const apiUrl = (params.get("api") ?? "http://127.0.0.1:8080").replace(/\/+$/, "");
const client = createClient(
  ReportService,
  createConnectTransport({
    baseUrl: apiUrl,
    // JSON on the wire, readable in the browser's network panel.
    useBinaryFormat: false,
    // GetJob is NO_SIDE_EFFECTS: sent as a cacheable GET without a CORS preflight.
    useHttpGet: true,
  }),
);

/** Consecutive failed reconnects (without a new event in between) before giving up. */
const maxReconnects = 8;
const terminalEvents = new Set([
  JobEventType.SUCCEEDED,
  JobEventType.FAILED,
  JobEventType.CANCELLED,
]);
const reportTypes: Record<string, ReportType> = {
  weekly: ReportType.WEEKLY,
  monthly: ReportType.MONTHLY,
  custom: ReportType.CUSTOM,
};

const ui = {
  form: element("submit-form", HTMLFormElement),
  userId: element("user-id", HTMLInputElement),
  reportType: element("report-type", HTMLSelectElement),
  filters: element("filters", HTMLTextAreaElement),
  submit: element("submit", HTMLButtonElement),
  cancel: element("cancel", HTMLButtonElement),
  error: element("error", HTMLDivElement),
  job: element("job", HTMLElement),
  jobId: element("job-id", HTMLElement),
  jobState: element("job-state", HTMLElement),
  progress: element("progress", HTMLProgressElement),
  progressLabel: element("progress-label", HTMLSpanElement),
  connection: element("connection", HTMLParagraphElement),
  downloadLine: element("download-line", HTMLParagraphElement),
  download: element("download", HTMLAnchorElement),
  events: element("events", HTMLOListElement),
};

/** The job on screen, and how to stop watching it when another one is submitted. */
let current: { jobId: string; watch: AbortController } | undefined;
let reconnects = 0;

element("api-url", HTMLElement).textContent = apiUrl;
ui.form.addEventListener("submit", (e) => {
  e.preventDefault();
  void submit();
});
ui.cancel.addEventListener("click", () => void cancel());

window.reportsExample = {
  apiUrl,
  async getJob(jobId) {
    const { job } = await client.getJob({ jobId });
    if (job === undefined) throw new Error(`GetJob answered without a job for ${jobId}`);
    return toJson(JobSchema, job);
  },
};

async function submit(): Promise<void> {
  clearError();
  let filters: JsonObject | undefined;
  try {
    filters = parseFilters(ui.filters.value);
  } catch (err) {
    showError("invalid_argument", err instanceof Error ? err.message : String(err));
    return;
  }
  ui.submit.disabled = true;
  try {
    const res = await client.submitReport({
      userId: ui.userId.value,
      reportType: reportTypes[ui.reportType.value] ?? ReportType.UNSPECIFIED,
      filters,
    });
    // A rejected submit leaves the job on screen, and its watch, as they were.
    current?.watch.abort();
    current = { jobId: res.jobId, watch: new AbortController() };
    resetJobView(res.jobId);
    void watch(current.jobId, current.watch.signal);
  } catch (err) {
    showConnectError(err);
  } finally {
    ui.submit.disabled = false;
  }
}

/**
 * Streams the job's events until a terminal one. A stream that fails with
 * UNAVAILABLE, drops, or ends early is opened again after the last event seen.
 */
async function watch(jobId: string, signal: AbortSignal): Promise<void> {
  let lastEventId = "";
  let failures = 0;
  for (;;) {
    try {
      ui.connection.textContent = lastEventId
        ? `watching again after event ${lastEventId}`
        : "watching live";
      for await (const res of client.watchJob({ jobId, afterEventId: lastEventId }, { signal })) {
        // A message without an event is a keepalive; it only proves the stream is alive.
        if (res.event === undefined) continue;
        lastEventId = res.event.id;
        failures = 0;
        showEvent(res.event);
        if (terminalEvents.has(res.event.type)) {
          ui.connection.textContent = "finished";
          ui.cancel.hidden = true;
          return;
        }
      }
      // The server ends a watch only after a terminal event: an early end is a dropped stream.
    } catch (err) {
      if (signal.aborted) return;
      const ce = ConnectError.from(err);
      if (!isDroppedStream(ce)) {
        showConnectError(ce);
        return;
      }
    }
    if (signal.aborted) return;
    failures++;
    if (failures > maxReconnects) {
      showError("unavailable", `gave up after ${maxReconnects} reconnects; reload to try again`);
      return;
    }
    reconnects++;
    ui.connection.dataset.reconnects = String(reconnects);
    // Exponential backoff with jitter, so many pages do not come back at once.
    const delayMs = Math.min(200 * 2 ** (failures - 1), 5000) * (0.5 + Math.random() / 2);
    ui.connection.textContent = `stream unavailable; reconnecting in ${Math.round(delayMs)} ms`;
    if (!(await sleep(delayMs, signal))) return;
  }
}

/**
 * UNAVAILABLE is the server saying "resume elsewhere or later". A connection
 * that fails before or during the stream (server restarting, network gone)
 * reaches fetch as a TypeError, which Connect-Web reports as UNKNOWN.
 */
function isDroppedStream(err: ConnectError): boolean {
  return (
    err.code === Code.Unavailable || (err.code === Code.Unknown && err.cause instanceof TypeError)
  );
}

/** CancelJob for the job on screen (the button is shown only with `?cancel` for now). */
async function cancel(): Promise<void> {
  if (current === undefined) return;
  clearError();
  try {
    await client.cancelJob({ jobId: current.jobId, reason: "cancelled from the browser example" });
  } catch (err) {
    showConnectError(err);
  }
}

function resetJobView(jobId: string): void {
  ui.job.hidden = false;
  ui.jobId.textContent = jobId;
  ui.jobState.textContent = "";
  ui.events.replaceChildren();
  ui.progress.value = 0;
  ui.progressLabel.textContent = "0%";
  ui.downloadLine.hidden = true;
  ui.download.removeAttribute("href");
  ui.cancel.hidden = !params.has("cancel");
}

function showEvent(event: JobEvent): void {
  const type = JobEventType[event.type];
  const state = JobState[event.state];
  const li = document.createElement("li");
  li.dataset.eventId = event.id;
  li.dataset.type = type;
  li.dataset.phase = event.phase;
  const parts = [type === state ? type : `${type} (${state})`, `${event.progress}%`];
  if (event.phase) parts.push(event.phase);
  if (event.attempt > 0) parts.push(`attempt ${event.attempt}`);
  if (event.error) parts.push(`error: ${event.error}`);
  li.textContent = parts.join(" · ");
  ui.events.append(li);

  ui.jobState.textContent = state;
  ui.progress.value = event.progress;
  ui.progressLabel.textContent = `${event.progress}%`;
  if (event.type === JobEventType.SUCCEEDED && event.result) {
    ui.download.href = event.result.downloadUrl;
    ui.download.textContent =
      new URL(event.result.downloadUrl).pathname.split("/").pop() ?? "download";
    ui.downloadLine.hidden = false;
  }
}

/** Parses the filters box: empty means none, otherwise a JSON object. */
function parseFilters(text: string): JsonObject | undefined {
  if (text.trim() === "") return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new Error("filters: not valid JSON");
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new Error("filters: must be a JSON object");
  }
  return value as JsonObject;
}

/** Shows a Connect error as its code and message, with each field violation it carries. */
function showConnectError(err: unknown): void {
  const ce = ConnectError.from(err);
  const violations = ce
    .findDetails(ViolationsSchema)
    .flatMap((d) => d.violations)
    .map((v) => `${v.field?.elements.map((e) => e.fieldName).join(".") ?? "?"}: ${v.message}`);
  showError(codeName(ce.code), ce.rawMessage, violations);
}

function showError(code: string, message: string, details: string[] = []): void {
  const codeEl = document.createElement("code");
  codeEl.textContent = code;
  const p = document.createElement("p");
  p.append(codeEl, `: ${message}`);
  const list = document.createElement("ul");
  for (const d of details) {
    const li = document.createElement("li");
    li.textContent = d;
    list.append(li);
  }
  ui.error.replaceChildren(p, ...(details.length > 0 ? [list] : []));
  ui.error.hidden = false;
}

function clearError(): void {
  ui.error.hidden = true;
  ui.error.replaceChildren();
}

/** A Connect code as it appears on the wire: Code.InvalidArgument is "invalid_argument". */
function codeName(code: Code): string {
  return (Code[code] ?? "unknown").replace(/[A-Z]/g, (c, i: number) =>
    i === 0 ? c.toLowerCase() : `_${c.toLowerCase()}`,
  );
}

/** Resolves true after `ms`, or false as soon as `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

function element<T extends HTMLElement>(id: string, type: new () => T): T {
  const el = document.getElementById(id);
  if (!(el instanceof type)) throw new Error(`index.html has no <${type.name}> #${id}`);
  return el;
}
