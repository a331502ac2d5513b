/**
 * readGetJobJsonText() and readGetJobJson() read the plainest GetJob JSON
 * as connect's JSON serialization does, and leave every other text to it.
 */
import { toBinary } from "@bufbuild/protobuf";
import { createMethodSerializationLookup } from "@connectrpc/connect/protocol";
import { describe, expect, it } from "vitest";
import { GetJobRequestSchema, ReportService } from "../../gen/reports/v1/report_service_pb.js";
import { readGetJobJson, readGetJobJsonText } from "../../src/api/get-job-json-reader.js";

const connect = createMethodSerializationLookup(ReportService.method.getJob, undefined, undefined, {
  readMaxBytes: 1 << 20,
  writeMaxBytes: 1 << 20,
}).getI(false);

const bytes = (s: string) => new TextEncoder().encode(s);

/** Every printable ASCII character but the quote and the backslash. */
const printable = Array.from({ length: 0x7f - 0x20 }, (_, i) => String.fromCharCode(0x20 + i))
  .filter((c) => c !== '"' && c !== "\\")
  .join("");

const read = [
  `{"jobId":"j_0123456789abcdef0123456789abcdef"}`,
  `{"jobId":"{w}j_2b6a1f0e"}`,
  `{"jobId":""}`,
  `{"jobId":"${printable}"}`,
  `{"jobId":"${"x".repeat(5000)}"}`,
  `{"jobId":"a:b,c}{"}`,
];

const leftToConnect = [
  `{"jobId": "j"}`,
  ` {"jobId":"j"}`,
  `{"jobId":"j"} `,
  `{"jobId":"j"}\n`,
  `{ "jobId":"j"}`,
  `{"job_id":"j"}`,
  `{"jobId":"a","jobId":"b"}`,
  `{"jobId":"a","job_id":"b"}`,
  `{"jobId":"j","unknown":1}`,
  `{"unknown":1,"jobId":"j"}`,
  `{"jobId":null}`,
  `{"jobId":5}`,
  `{"jobId":"a\\"b"}`,
  `{"jobId":"a\\u0041"}`,
  `{"jobId":"a\\\\"}`,
  `{"jobId":"ü"}`,
  `{"jobId":"日本😀"}`,
  `{"jobId":"a\tb"}`,
  `{"jobId":"a\u007fb"}`,
  `{"jobId":"j"`,
  `{"jobId":"`,
  `{"jobId":"}`,
  `{}`,
  ``,
  `null`,
  `\ufeff{"jobId":"j"}`,
];

describe("readGetJobJsonText()", () => {
  for (const text of read) {
    it(`reads ${text.slice(0, 60)} as connect does`, () => {
      const ours = readGetJobJsonText(text);
      const theirs = connect.parse(bytes(text)) as typeof ours;
      expect(ours).toBeDefined();
      expect(ours).toStrictEqual(theirs);
      expect(readGetJobJson(bytes(text))).toStrictEqual(theirs);
      if (ours === undefined || theirs === undefined) return;
      expect(toBinary(GetJobRequestSchema, ours)).toEqual(toBinary(GetJobRequestSchema, theirs));
    });
  }

  for (const text of leftToConnect) {
    it(`leaves ${JSON.stringify(text)} to connect`, () => {
      expect(readGetJobJsonText(text)).toBeUndefined();
      expect(readGetJobJson(bytes(text))).toBeUndefined();
    });
  }

  it("leaves non-ASCII bytes in a body to connect (malformed UTF-8 too)", () => {
    for (const middle of [[0xc3], [0xc3, 0xbc], [0x80], [0xff]]) {
      const body = Buffer.concat([
        Buffer.from(`{"jobId":"a`),
        Buffer.from(middle),
        Buffer.from(`"}`),
      ]);
      expect(readGetJobJson(body)).toBeUndefined();
    }
  });

  it("reads a body that is a view into a larger buffer", () => {
    const whole = Buffer.from(`xxxx{"jobId":"j-2"}yyyy`);
    expect(readGetJobJson(whole.subarray(4, whole.length - 4))?.jobId).toBe("j-2");
  });
});
