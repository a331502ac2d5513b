/** Types of scripts/audit.mjs, for the tests. */
export declare const failingSeverities: string[];
/** The verdict on one `npm audit --json` output. */
export interface AuditVerdict {
  verdict: "pass" | "fail" | "unavailable";
  counts: Record<string, number>;
  findings: Array<{ name: string; severity: string; advisories: string[] }>;
  reason?: string;
}
/** Judges the text `npm audit --omit=dev --json` printed. */
export declare function evaluateAudit(text: string): AuditVerdict;
