/** reportctl's help texts: `reportctl --help` and `reportctl <command> --help`. */
import {
  JobPrioritySchema,
  JobStateSchema,
  ReportTypeSchema,
} from "../../gen/reports/v1/job_pb.js";
import { shortNameList, valuesByShortName } from "../client/job-enums.js";

/** The global part, shown by `reportctl --help`. */
export const mainHelp = `reportctl: submit, follow and manage report jobs.

usage: reportctl [global flags] <command> [flags]

commands:
  submit    submit a report (--watch follows it to the end)
  get       show a job
  watch     follow a job's events live, to its end (resumes by itself)
  cancel    cancel a queued, retrying or running job
  retry     re-run a FAILED (dead-lettered) job
  list      list your jobs, newest first

global flags:
  --url URL            the API (env REPORTS_URL; default http://127.0.0.1:8080)
  --api-key KEY        sent as Authorization: Bearer KEY (env REPORTS_API_KEY)
  --protocol P         grpc (default), connect or grpc-web
  --json               machine-readable output: one JSON document (JSON lines for watch)
  -h, --help           this help; "reportctl <command> --help" for a command's

exit codes:
  0 success   1 other error   2 usage   3 not found   4 unauthenticated / permission denied
  5 rejected (invalid request, idempotency key reused, wrong job state)
  6 job FAILED   7 job CANCELLED   8 unavailable   9 over capacity (retry later)   130 interrupted
`;

/** Per-command help. */
export const commandHelp: Record<string, string> = {
  submit: `usage: reportctl submit --type TYPE --user USER [flags]
       reportctl submit USER TYPE [flags]

Submits a report job and prints its id and status URL.

  --type TYPE               ${shortNameList(ReportTypeSchema)} (required)
  --user USER               the user the report is for (required)
  --idempotency-key KEY     same key and request within 24 h: the same job (alias --key)
  --filters JSON            filters as a JSON object, e.g. '{"region":"eu"}'
  --filter KEY=VALUE        one filter; repeatable (values that parse as JSON are JSON)
  --priority P              ${shortNameList(JobPrioritySchema)} (default normal)
  --run-at TIME             do not start before TIME (ISO 8601, or +30s / +10m / +2h)
  --deadline TIME           fail the job if it has not finished by TIME (same forms)
  --watch                   follow the job to its end: a progress bar on a terminal,
                            plain lines otherwise; ends with the download URL
`,
  get: `usage: reportctl get JOB_ID

Shows a job: state, progress, phase, attempts, and the download URL once done.
`,
  watch: `usage: reportctl watch JOB_ID [--after EVENT_ID]

Follows a job's events to its end (SUCCEEDED, FAILED or CANCELLED). When the
stream drops (a server restart, a proxy) it resumes after the last event seen,
so nothing is shown twice or lost. A progress bar on a terminal, plain lines
otherwise, JSON lines with --json. Exit 0 when the job SUCCEEDED, 6 FAILED, 7 CANCELLED.

  --after EVENT_ID   start after this event id (from an earlier watch)
`,
  cancel: `usage: reportctl cancel JOB_ID [--reason TEXT]

Cancels a queued, retrying or running job (a running one stops within a second).

  --reason TEXT   why; kept as the job's failure reason
`,
  retry: `usage: reportctl retry JOB_ID

Re-runs a FAILED (dead-lettered) job with fresh attempts, under the same id.
`,
  list: `usage: reportctl list [flags]

Lists your jobs, newest first, one page at a time.

  --user USER          only this user's jobs
  --state S[,S...]     only these states: ${[...valuesByShortName(JobStateSchema).keys()].join(", ")}
  --page-size N        1-200 (default 50)
  --page-token T       the next page (printed after a page when there is more)
  --all                follow every page
`,
};
