import { describe, expect, it } from "vitest";
import { randomText } from "../../src/worker/random-text.js";

describe("randomText()", () => {
  it("gives texts of the asked length that never repeat, across pool refills", () => {
    const seen = new Set<string>();
    // 12 bytes each: far more than one 4 KB pool.
    for (let i = 0; i < 2000; i++) {
      const token = randomText(12, "base64url");
      expect(token).toMatch(/^[A-Za-z0-9_-]{16}$/);
      seen.add(token);
    }
    expect(seen.size).toBe(2000);
    expect(randomText(6, "hex")).toMatch(/^[0-9a-f]{12}$/);
    expect(randomText(300, "hex")).toHaveLength(600);
  });
});
