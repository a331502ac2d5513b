/**
 * What each remote address holds open (connections, streams), so one peer
 * cannot take everything the server allows. IPv6 peers are counted per /64:
 * a single host usually holds a whole /64 and could otherwise pick a new
 * address for every connection.
 */

/** Counts open things (connections or streams) by address and says whether one more is allowed. */
export interface AddressLimiter {
  /**
   * Counts one more from `address`: returns the release function (idempotent;
   * call it when that thing closes), or undefined when the address is at its
   * cap (nothing was counted).
   */
  admit(address: string | undefined): (() => void) | undefined;
  /** Addresses holding at least one. */
  readonly addresses: number;
}

/** Creates a limiter allowing `maxPerAddress` open at once per address (0: no cap). */
export function createAddressLimiter(maxPerAddress: number): AddressLimiter {
  const open = new Map<string, number>();
  return {
    get addresses() {
      return open.size;
    },
    admit(address) {
      const key = addressKey(address);
      const count = open.get(key) ?? 0;
      if (maxPerAddress > 0 && count >= maxPerAddress) return undefined;
      open.set(key, count + 1);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        const left = (open.get(key) ?? 1) - 1;
        if (left <= 0) open.delete(key);
        else open.set(key, left);
      };
    },
  };
}

/**
 * The key an address is counted under: an IPv4 address as it is (also
 * when IPv4-mapped, `::ffff:1.2.3.4`), an IPv6 address as its /64 prefix
 * (`2001:db8:0:1::/64`). Unknown addresses (a socket already closed) share one key.
 */
export function addressKey(address: string | undefined): string {
  if (address === undefined || address === "") return "unknown";
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  if (mapped) return mapped[1] as string;
  if (!address.includes(":")) return address;
  const bare = address.split("%")[0] as string; // drop a zone id (fe80::1%eth0)
  const [head = "", tail] = bare.split("::");
  const groups = (part: string) =>
    part === "" ? [] : part.split(":").flatMap((g) => (g.includes(".") ? ["0", "0"] : [g]));
  const left = groups(head);
  const right = tail === undefined ? [] : groups(tail);
  const all = [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right];
  const prefix = all.slice(0, 4).map((g) => (Number.parseInt(g, 16) || 0).toString(16));
  return `${prefix.join(":")}::/64`;
}
