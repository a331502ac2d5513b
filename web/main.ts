/**
 * The browser app, served by the API at `/` (or from any other origin the
 * API allows with CORS_ORIGINS, with `?api=http://host:port`). No framework:
 * the generated ReportService stubs over Connect-Web.
 *
 * - submit a report (SubmitReport);
 * - the user's jobs (ListJobs), each with a live progress bar driven by
 *   WatchJob, which resumes after the last event id when the stream drops;
 * - cancel (CancelJob) and retry (RetryJob) buttons, the download link when done;
 * - an optional API key, kept in sessionStorage, sent as `Authorization: Bearer`.
 *
 * Built by scripts/build-web.mjs (esbuild) into web/dist/.
 */
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { toJson } from "@bufbuild/protobuf";
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import {
  type Job,
  type JobEvent,
  JobSchema,
  JobState,
  ReportType,
  ReportTypeSchema,
} from "../gen/reports/v1/job_pb.js";
import { ReportService } from "../gen/reports/v1/report_service_pb.js";
import { followJob, isDroppedStream } from "../src/client/follow-job.js";
import { isLiveState, shortName, valuesByShortName } from "../src/client/job-enums.js";
import "./style.css";

/** What the page exposes on `window.reportsApp`, for the console and for tests. */
export interface ReportsApp {
  readonly apiUrl: string;
  /** GetJob over Connect-Web (a Connect GET); the job in its JSON form. */
  getJob(jobId: string): Promise<JsonValue>;
}

declare global {
  interface Window {
    reportsApp?: ReportsApp;
  }
}

const params = new URLSearchParams(location.search);
const apiUrl = (params.get("api") ?? location.origin).replace(/\/+$/, "");
const keyStorage = "reports.apiKey";
/** Watches open at once: each holds an HTTP/1.1 connection, and browsers allow about 6 per origin. */
const maxWatches = 4;
/** Consecutive failed reconnects (without a new event in between) before a watch gives up. */
const maxReconnects = 8;

const auth: Interceptor = (next) => (req) => {
  const key = sessionStorage.getItem(keyStorage) ?? "";
  if (key !== "") req.header.set("authorization", `Bearer ${key}`);
  return next(req);
};
const client = createClient(
  ReportService,
  createConnectTransport({
    baseUrl: apiUrl,
    // JSON on the wire, readable in the network panel; GetJob and ListJobs
    // (NO_SIDE_EFFECTS) as GET requests.
    useBinaryFormat: false,
    useHttpGet: true,
    interceptors: [auth],
  }),
);

/** The report type select's values ("weekly") to ReportType. */
const reportTypes = valuesByShortName(ReportTypeSchema);

const ui = {
  apiUrl: element("api-url", HTMLElement),
  keyForm: element("key-form", HTMLFormElement),
  apiKey: element("api-key", HTMLInputElement),
  apiKeyState: element("api-key-state", HTMLElement),
  form: element("submit-form", HTMLFormElement),
  userId: element("user-id", HTMLInputElement),
  reportType: element("report-type", HTMLSelectElement),
  filters: element("filters", HTMLTextAreaElement),
  submit: element("submit", HTMLButtonElement),
  error: element("error", HTMLDivElement),
  jobsUser: element("jobs-user", HTMLElement),
  refresh: element("refresh", HTMLButtonElement),
  jobsEmpty: element("jobs-empty", HTMLElement),
  jobs: element("jobs", HTMLUListElement),
};

/** One job on screen. */
interface JobCard {
  jobId: string;
  userId: string;
  li: HTMLLIElement;
  /** The last event id shown: where a watch resumes. */
  lastEventId: string;
  watch?: AbortController;
  reconnects: number;
}

const cards = new Map<string, JobCard>();
const waiting: JobCard[] = [];
let watching = 0;
let listing: AbortController | undefined;

ui.apiUrl.textContent = apiUrl;
ui.apiKey.value = sessionStorage.getItem(keyStorage) ?? "";
showKeyState();
ui.keyForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const key = ui.apiKey.value.trim();
  if (key === "") sessionStorage.removeItem(keyStorage);
  else sessionStorage.setItem(keyStorage, key);
  showKeyState();
  void loadJobs();
});
ui.form.addEventListener("submit", (e) => {
  e.preventDefault();
  void submit();
});
ui.userId.addEventListener("change", () => void loadJobs());
ui.refresh.addEventListener("click", () => void loadJobs());

window.reportsApp = {
  apiUrl,
  async getJob(jobId) {
    const { job } = await client.getJob({ jobId });
    if (job === undefined) throw new Error(`GetJob answered without a job for ${jobId}`);
    return toJson(JobSchema, job);
  },
};

void loadJobs();

async function submit(): Promise<void> {
  clearError();
  let filters: JsonObject | undefined;
  try {
    filters = parseFilters(ui.filters.value);
  } catch (err) {
    showError("invalid_argument", err instanceof Error ? err.message : String(err));
    ui.filters.focus();
    return;
  }
  ui.submit.disabled = true;
  try {
    const res = await client.submitReport({
      userId: ui.userId.value,
      reportType: reportTypes.get(ui.reportType.value) ?? ReportType.UNSPECIFIED,
      filters,
    });
    if (ui.jobsUser.textContent !== ui.userId.value) await loadJobs();
    if (res.job) upsertCard(res.job, { first: true });
  } catch (err) {
    showConnectError(err);
  } finally {
    ui.submit.disabled = false;
  }
}

/**
 * ListJobs for the user in the form: the newest 20, watching the active ones.
 * Cards of that user that the answer does not have yet (a submit that raced
 * the list) stay on top; other users' cards go.
 */
async function loadJobs(): Promise<void> {
  listing?.abort();
  const controller = new AbortController();
  listing = controller;
  const userId = ui.userId.value.trim();
  ui.jobsUser.textContent = userId;
  try {
    const { jobs } = await client.listJobs({ userId, pageSize: 20 }, { signal: controller.signal });
    if (controller.signal.aborted) return;
    for (const card of [...cards.values()]) {
      if (card.userId === userId) continue;
      card.watch?.abort();
      const at = waiting.indexOf(card);
      if (at >= 0) waiting.splice(at, 1);
      card.li.remove();
      cards.delete(card.jobId);
    }
    for (const job of jobs) upsertCard(job, { first: false });
    ui.jobsEmpty.hidden = cards.size > 0;
  } catch (err) {
    if (!controller.signal.aborted) showConnectError(err);
  }
}

/** Shows `job` (new or known) and watches it while it is active. */
function upsertCard(job: Job, where: { first: boolean }): void {
  let card = cards.get(job.id);
  if (card === undefined) {
    card = {
      jobId: job.id,
      userId: job.userId,
      li: renderCard(job),
      lastEventId: "",
      reconnects: 0,
    };
    cards.set(job.id, card);
    ui.jobsEmpty.hidden = true;
  }
  if (where.first) ui.jobs.prepend(card.li);
  else ui.jobs.append(card.li);
  // A card its watch already updates shows newer news than a listed snapshot.
  if (card.lastEventId === "") showJob(card, job);
  if (isLiveState(job.state)) startWatch(card);
}

function renderCard(job: Job): HTMLLIElement {
  const li = document.createElement("li");
  li.className = "job";
  li.dataset.jobId = job.id;
  const progressId = `progress-${job.id}`;
  li.innerHTML = `
    <div class="job-head">
      <strong class="type"></strong>
      <span class="state"></span>
      <span class="job-id"></span>
    </div>
    <div class="progress-line">
      <progress max="100" value="0" id="${progressId}"></progress>
      <span class="status" role="status" aria-live="polite"></span>
    </div>
    <p class="reason" hidden></p>
    <div class="job-actions">
      <a class="download" hidden download>Download report</a>
      <button type="button" class="cancel danger" hidden>Cancel</button>
      <button type="button" class="retry secondary" hidden>Retry</button>
    </div>`;
  part(li, ".type").textContent = `${typeName(job.reportType)} report`;
  part(li, ".job-id").textContent = job.id;
  part(li, "progress").setAttribute("aria-label", `Progress of job ${job.id}`);
  part(li, ".cancel").setAttribute("aria-label", `Cancel job ${job.id}`);
  part(li, ".retry").setAttribute("aria-label", `Retry job ${job.id}`);
  part(li, ".cancel").addEventListener("click", () => void cancel(job.id));
  part(li, ".retry").addEventListener("click", () => void retry(job.id));
  return li;
}

/** Renders a job's state (from ListJobs, a button's answer, or an event). */
function showJob(card: JobCard, job: Job): void {
  render(card, {
    state: job.state,
    progress: job.progress,
    phase: job.phase,
    downloadUrl: job.result?.downloadUrl,
    reason: job.failureReason,
  });
}

function showEvent(card: JobCard, event: JobEvent): void {
  card.lastEventId = event.id;
  render(card, {
    state: event.state,
    progress: event.progress,
    phase: event.phase,
    downloadUrl: event.result?.downloadUrl,
    reason: event.error,
  });
}

function render(
  card: JobCard,
  view: { state: JobState; progress: number; phase: string; downloadUrl?: string; reason: string },
): void {
  const { li } = card;
  const state = JobState[view.state] ?? "UNKNOWN";
  li.dataset.state = state;
  part(li, ".state").textContent = state;
  const bar = part(li, "progress") as HTMLProgressElement;
  bar.value = view.progress;
  part(li, ".status").textContent = `${view.progress}%${view.phase ? ` · ${view.phase}` : ""}`;
  const reason = part(li, ".reason");
  const failed = view.state === JobState.FAILED || view.state === JobState.CANCELLED;
  reason.hidden = !failed || view.reason === "";
  reason.textContent = view.reason;
  const link = part(li, ".download") as HTMLAnchorElement;
  if (view.state === JobState.SUCCEEDED && view.downloadUrl) {
    link.href = view.downloadUrl;
    link.hidden = false;
  } else {
    link.hidden = true;
    link.removeAttribute("href");
  }
  part(li, ".cancel").hidden = !isLiveState(view.state);
  part(li, ".retry").hidden = view.state !== JobState.FAILED;
}

/** Starts watching `card` now, or when a watch slot frees up. */
function startWatch(card: JobCard): void {
  if (card.watch !== undefined || waiting.includes(card)) return;
  if (watching >= maxWatches) {
    waiting.push(card);
    return;
  }
  const controller = new AbortController();
  card.watch = controller;
  watching++;
  void watch(card, controller.signal).finally(() => {
    watching--;
    if (card.watch === controller) card.watch = undefined;
    const next = waiting.shift();
    if (next !== undefined && cards.get(next.jobId) === next) startWatch(next);
  });
}

/**
 * Streams the job's events until a terminal one, resuming after the last
 * event seen when the stream drops (src/client/follow-job.ts, as the Node
 * client does).
 */
async function watch(card: JobCard, signal: AbortSignal): Promise<void> {
  try {
    for await (const event of followJob({
      open: (afterEventId, s) =>
        client.watchJob({ jobId: card.jobId, afterEventId }, { signal: s }),
      afterEventId: card.lastEventId,
      signal,
      maxReconnects,
      // Spread out, so many pages do not come back at once.
      backoff: { initialDelayMs: 200, maxDelayMs: 5000 },
      onReconnect() {
        card.reconnects++;
        card.li.dataset.reconnects = String(card.reconnects);
      },
    })) {
      showEvent(card, event);
    }
  } catch (err) {
    if (signal.aborted) return;
    const ce = ConnectError.from(err);
    if (isDroppedStream(ce)) {
      showError("unavailable", `lost job ${card.jobId}'s live updates; press Refresh to try again`);
    } else {
      showConnectError(ce);
    }
  }
}

async function cancel(jobId: string): Promise<void> {
  clearError();
  const card = cards.get(jobId);
  try {
    const { job } = await client.cancelJob({ jobId, reason: "cancelled in the browser" });
    if (card && job) showJob(card, job);
  } catch (err) {
    showConnectError(err);
  }
}

async function retry(jobId: string): Promise<void> {
  clearError();
  const card = cards.get(jobId);
  try {
    const { job } = await client.retryJob({ jobId });
    if (card && job) {
      // The watch that delivered FAILED may still be winding down: replace it, so
      // the new attempt is watched (after the FAILED event, its events follow it).
      card.watch?.abort();
      card.watch = undefined;
      showJob(card, job);
      startWatch(card);
    }
  } catch (err) {
    showConnectError(err);
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

function showKeyState(): void {
  ui.apiKeyState.textContent =
    (sessionStorage.getItem(keyStorage) ?? "") === "" ? "No key set." : "A key is set.";
}

/** Shows a Connect error as its code and message, with each field violation it carries. */
function showConnectError(err: unknown): void {
  const ce = ConnectError.from(err);
  const violations = ce
    .findDetails(ViolationsSchema)
    .flatMap((d) => d.violations)
    .map((v) => `${v.field?.elements.map((e) => e.fieldName).join(".") ?? "?"}: ${v.message}`);
  const hint = ce.code === Code.Unauthenticated ? " (set an API key above)" : "";
  showError(codeToString(ce.code), `${ce.rawMessage}${hint}`, violations);
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

function typeName(t: ReportType): string {
  const name = shortName(ReportTypeSchema, t) ?? "unknown";
  return name.charAt(0).toUpperCase() + name.slice(1);
}

function part(root: HTMLElement, selector: string): HTMLElement {
  const el = root.querySelector<HTMLElement>(selector);
  if (el === null) throw new Error(`job card has no ${selector}`);
  return el;
}

function element<T extends HTMLElement>(id: string, type: new () => T): T {
  const el = document.getElementById(id);
  if (!(el instanceof type)) throw new Error(`index.html has no <${type.name}> #${id}`);
  return el;
}
