/**
 * readConnectGetQuery() reads what connect reads of a GET's query exactly as
 * URLSearchParams does.
 */
import { describe, expect, it } from "vitest";
import { readConnectGetQuery } from "../../src/api/connect-get-query.js";

const reference = (search: string) => {
  const query = new URLSearchParams(search);
  return {
    encoding: query.get("encoding"),
    message: query.get("message"),
    base64: query.get("base64"),
    compression: query.has("compression"),
  };
};

const message = encodeURIComponent(JSON.stringify({ jobId: "{w}j_0123456789abcdef" }));

const cases = [
  `connect=v1&encoding=json&message=${message}`,
  `encoding=proto&base64=1&message=CgNhYmM`,
  `encoding=json&message=${message}&compression=gzip`,
  `encoding=json&message=${message}&compression`,
  `encoding=json&encoding=proto&message=a&message=b&base64=0&base64=1`,
  `message=%7B%22jobId%22%3A%22a+b%20c%2Bd%22%7D&encoding=json`,
  `message=${encodeURIComponent('{"jobId":"ü 日本 😀"}')}&encoding=json`,
  `message=%ZZ&encoding=json`,
  `message=%C3&encoding=json`,
  `message=%ED%A0%80&encoding=json`,
  `message=%FF%FE&encoding=json`,
  `message=100%&encoding=json`,
  `enc%6Fding=json&message=x`,
  `encoding+=json&message=x`,
  `encoding=json+&message=x`,
  `?encoding=json&message=x`,
  `??encoding=json&message=x`,
  `&&encoding=json&&message=x&&`,
  `encoding&message&base64&compression`,
  `encoding=&message=`,
  `encoding=json=json&message=a=b`,
  `=&=x&encoding=json`,
  ``,
  `&`,
  `?`,
  `message=ü&encoding=json`,
];

describe("readConnectGetQuery()", () => {
  for (const search of cases) {
    it(`reads ${JSON.stringify(search)} as URLSearchParams does`, () => {
      expect(readConnectGetQuery(search)).toStrictEqual(reference(search));
    });
  }

  it("reads random queries as URLSearchParams does", () => {
    const pieces = [
      "encoding",
      "message",
      "base64",
      "compression",
      "json",
      "proto",
      "1",
      "=",
      "&",
      "?",
      "+",
      "%",
      "%2B",
      "%3D",
      "%26",
      "%C3",
      "%A9",
      "%ZZ",
      "%7B",
      "a",
      "é",
      "😀",
      " ",
    ];
    let seed = 7;
    const next = () => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed;
    };
    for (let n = 0; n < 20_000; n++) {
      let search = "";
      const length = next() % 12;
      for (let i = 0; i < length; i++) search += pieces[next() % pieces.length];
      expect(readConnectGetQuery(search), search).toStrictEqual(reference(search));
    }
  });
});
