import { describe, expect, it } from "vitest";
import { addressKey, createAddressLimiter } from "../../src/api/address-limiter.js";

describe("addressKey()", () => {
  it("keeps IPv4 addresses, also IPv4-mapped ones", () => {
    expect(addressKey("203.0.113.7")).toBe("203.0.113.7");
    expect(addressKey("::ffff:203.0.113.7")).toBe("203.0.113.7");
    expect(addressKey("::FFFF:10.0.0.1")).toBe("10.0.0.1");
  });

  it("counts IPv6 addresses by their /64, however they are written", () => {
    const a = addressKey("2001:db8:0:1::1");
    expect(a).toBe("2001:db8:0:1::/64");
    expect(addressKey("2001:0db8:0000:0001:ffff:ffff:ffff:ffff")).toBe(a);
    expect(addressKey("2001:db8:0:1:a:b:c:d")).toBe(a);
    expect(addressKey("2001:db8:0:2::1")).not.toBe(a);
    expect(addressKey("::1")).toBe("0:0:0:0::/64");
    expect(addressKey("fe80::1%eth0")).toBe("fe80:0:0:0::/64");
    expect(addressKey("64:ff9b::192.0.2.33")).toBe("64:ff9b:0:0::/64");
  });

  it("puts unknown addresses under one key", () => {
    expect(addressKey(undefined)).toBe("unknown");
    expect(addressKey("")).toBe("unknown");
  });
});

describe("createAddressLimiter()", () => {
  it("admits up to the cap per address, and again after a release", () => {
    const limiter = createAddressLimiter(2);
    const a1 = limiter.admit("192.0.2.1");
    const a2 = limiter.admit("::ffff:192.0.2.1");
    expect(a1).toBeDefined();
    expect(a2).toBeDefined();
    expect(limiter.admit("192.0.2.1")).toBeUndefined();
    expect(limiter.admit("192.0.2.2")).toBeDefined();
    a1?.();
    a1?.(); // releasing twice frees one slot only
    expect(limiter.admit("192.0.2.1")).toBeDefined();
    expect(limiter.admit("192.0.2.1")).toBeUndefined();
  });

  it("forgets addresses without connections, and admits everything with cap 0", () => {
    const limiter = createAddressLimiter(0);
    const releases = Array.from({ length: 100 }, () => limiter.admit("2001:db8::1"));
    expect(releases.every((r) => r !== undefined)).toBe(true);
    expect(limiter.addresses).toBe(1);
    for (const r of releases) r?.();
    expect(limiter.addresses).toBe(0);
  });
});
