import { describe, expect, it } from "vitest";
import type { JsonValue } from "../../src/domain/job.js";
import {
  canonicalJson,
  type FingerprintFields,
  fingerprintJson,
} from "../../src/queue/canonical-json.js";

describe("canonicalJson()", () => {
  it("sorts object keys at every depth", () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { z: 0, y: 1 }], c: null } })).toBe(
      '{"a":{"c":null,"d":[1,{"y":1,"z":0}]},"b":1}',
    );
  });

  it("gives the same text for objects that differ only in key order", () => {
    const a: JsonValue = {
      region: "eu",
      metrics: ["orders", "sessions"],
      range: { to: 2, from: 1 },
    };
    const b: JsonValue = {
      range: { from: 1, to: 2 },
      metrics: ["orders", "sessions"],
      region: "eu",
    };
    expect(canonicalJson(a)).toBe(canonicalJson(b));
  });

  it("keeps array order, which is meaningful", () => {
    expect(canonicalJson([2, 1])).not.toBe(canonicalJson([1, 2]));
    expect(canonicalJson(["b", "a"])).toBe('["b","a"]');
  });

  it("distinguishes values that differ", () => {
    expect(canonicalJson({ a: 1 })).not.toBe(canonicalJson({ a: "1" }));
    expect(canonicalJson({ a: null })).not.toBe(canonicalJson({}));
    expect(canonicalJson({ a: { b: 1 } })).not.toBe(canonicalJson({ "a.b": 1 }));
  });

  it("serializes primitives as JSON does", () => {
    expect(canonicalJson(null)).toBe("null");
    expect(canonicalJson(undefined)).toBe("null");
    expect(canonicalJson(true)).toBe("true");
    expect(canonicalJson(1.5)).toBe("1.5");
    expect(canonicalJson('quote " and \\ and \u2028')).toBe(
      JSON.stringify('quote " and \\ and \u2028'),
    );
    expect(canonicalJson({ 'k"ey': 1 })).toBe('{"k\\"ey":1}');
  });

  it("is valid JSON that parses back to the same value", () => {
    const value: JsonValue = {
      z: [1, "two", false, null, { y: [], x: {} }],
      a: { nested: { deeper: "é😀" } },
      n: -0.25,
    };
    expect(JSON.parse(canonicalJson(value))).toEqual(value);
  });
});

describe("fingerprintJson()", () => {
  it("is canonicalJson of the submit's fingerprinted fields", () => {
    const cases: FingerprintFields[] = [
      {
        userId: "u",
        reportType: "weekly",
        filters: {},
        priority: "normal",
        runAt: null,
        deadline: null,
      },
      {
        userId: 'us"er\u00e9📈',
        reportType: "custom",
        filters: { z: [3, { b: null, a: "x" }], a: 1.5, "": true, é: "ü" },
        priority: "high",
        runAt: 1_764_680_000_123,
        deadline: 1_764_690_000_000,
      },
      {
        userId: "",
        reportType: "monthly",
        filters: { n: -0.000001 },
        priority: "low",
        runAt: 0,
        deadline: null,
      },
    ];
    for (const f of cases) {
      expect(fingerprintJson(f)).toBe(canonicalJson({ ...f }));
    }
  });
});
