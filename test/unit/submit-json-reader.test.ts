/**
 * readSubmitReportJson() reads the plainest SubmitReport bodies as connect's
 * JSON serialization does, and leaves every other body to it.
 */
import { toBinary } from "@bufbuild/protobuf";
import { createMethodSerializationLookup } from "@connectrpc/connect/protocol";
import { describe, expect, it } from "vitest";
import {
  ReportService,
  SubmitReportRequestSchema,
} from "../../gen/reports/v1/report_service_pb.js";
import { readSubmitReportJson } from "../../src/api/submit-json-reader.js";

const connect = createMethodSerializationLookup(
  ReportService.method.submitReport,
  undefined,
  undefined,
  { readMaxBytes: 1 << 20, writeMaxBytes: 1 << 20 },
).getI(false);

const bytes = (s: string) => new TextEncoder().encode(s);

const read = [
  `{"idempotencyKey":"k-1","userId":"u-1","reportType":"REPORT_TYPE_WEEKLY","filters":{"region":"eu","format":"csv"}}`,
  `{"userId":"u-1","reportType":"REPORT_TYPE_CUSTOM","filters":{"a":[1,2.5,-0,null,true,{"b":"c"}],"n":1e300},"priority":"JOB_PRIORITY_HIGH"}`,
  `{"reportType":"REPORT_TYPE_UNSPECIFIED","priority":"JOB_PRIORITY_UNSPECIFIED"}`,
  `{}`,
  ` { "userId" : "ü 日本 😀", "filters" : {} } `,
  `{"userId":"a:b\\":\\"c","filters":{"k:\\"":"v\\\\","k2":":"}}`,
  `{"filters":{"x":{"y":{"z":[[],{}]}}},"idempotencyKey":""}`,
];

const leftToConnect = [
  // other fields, proto names, other value types
  `{"runAt":"2030-01-01T00:00:00Z"}`,
  `{"deadline":"2030-01-01T00:00:00Z"}`,
  `{"user_id":"u-1"}`,
  `{"idempotency_key":"k"}`,
  `{"report_type":"REPORT_TYPE_WEEKLY"}`,
  `{"unknownField":1}`,
  `{"reportType":1}`,
  `{"reportType":"REPORT_TYPE_NOPE"}`,
  `{"priority":"JOB_PRIORITY_NOPE"}`,
  `{"userId":null}`,
  `{"userId":5}`,
  `{"filters":null}`,
  `{"filters":[1]}`,
  `{"filters":"x"}`,
  `{"__proto__":{"userId":"x"}}`,
  `{"filters":{"__proto__":{"a":1}}}`,
  `{"filters":{"big":1e400}}`,
  `{"filters":{"a":[{"x":-1e999}]}}`,
  // duplicate keys (which protobuf-es rejects)
  `{"userId":"a","userId":"b"}`,
  `{"filters":{"a":1,"a":2}}`,
  `{"filters":{"a":[{"b":1,"b":1}]}}`,
  `{"filters":{"a":{}},"filters":{"a":{}}}`,
  // not a JSON object
  `[]`,
  `null`,
  `"x"`,
  `{`,
  ``,
  `\ufeff{"userId":"u"}`,
];

describe("readSubmitReportJson()", () => {
  for (const body of read) {
    it(`reads ${body} as connect does`, () => {
      const ours = readSubmitReportJson(bytes(body));
      const theirs = connect.parse(bytes(body)) as typeof ours;
      expect(ours).toBeDefined();
      expect(ours).toStrictEqual(theirs);
      if (ours === undefined || theirs === undefined) return;
      expect(toBinary(SubmitReportRequestSchema, ours)).toEqual(
        toBinary(SubmitReportRequestSchema, theirs),
      );
    });
  }

  for (const body of leftToConnect) {
    it(`leaves ${JSON.stringify(body)} to connect`, () => {
      expect(readSubmitReportJson(bytes(body))).toBeUndefined();
    });
  }

  it("leaves malformed UTF-8 to connect", () => {
    const body = Buffer.concat([
      Buffer.from(`{"userId":"`),
      Buffer.from([0xc3]),
      Buffer.from(`"}`),
    ]);
    expect(readSubmitReportJson(body)).toBeUndefined();
  });

  it("reads a body that is a view into a larger buffer", () => {
    const whole = Buffer.from(`xxxx{"userId":"u-2"}yyyy`);
    const body = whole.subarray(4, whole.length - 4);
    expect(readSubmitReportJson(body)?.userId).toBe("u-2");
  });
});
