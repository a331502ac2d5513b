/**
 * Raw TCP connections to a server, for tests of what a misbehaving peer can
 * do: send nothing, part of a preface, a trickle. Each records what it
 * received and when the server closed it.
 */
import net from "node:net";

/** One open (or closed) raw connection. */
export interface RawConnection {
  readonly socket: net.Socket;
  /** Everything the server sent so far, as latin1 text. */
  readonly received: string;
  /** True once the connection is closed (by either side). */
  readonly closed: boolean;
  /** Milliseconds from connect to close; undefined while open. */
  readonly openForMs: number | undefined;
  /** Writes `data` unless the connection is closed. */
  write(data: string | Buffer): void;
  /** Closes the connection from this side. */
  destroy(): void;
}

/** Connects to `url`'s host and port, from `localAddress` when given (e.g. 127.0.0.2). */
export function rawConnection(
  url: string,
  options: { localAddress?: string } = {},
): Promise<RawConnection> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect({
      host: hostname.replace(/^\[|\]$/g, ""),
      port: Number(port),
      localAddress: options.localAddress,
    });
    let received = "";
    let closedAt: number | undefined;
    let connectedAt = 0;
    socket.on("data", (chunk: Buffer) => {
      received += chunk.toString("latin1");
    });
    socket.on("close", () => {
      closedAt = Date.now();
    });
    const conn: RawConnection = {
      socket,
      get received() {
        return received;
      },
      get closed() {
        return closedAt !== undefined;
      },
      get openForMs() {
        return closedAt === undefined ? undefined : closedAt - connectedAt;
      },
      write(data) {
        if (!socket.destroyed && socket.writable) socket.write(data);
      },
      destroy() {
        socket.destroy();
      },
    };
    socket.once("connect", () => {
      connectedAt = Date.now();
      // A server closing the connection may reset it: that is a close here, not a failure.
      socket.on("error", () => undefined);
      resolve(conn);
    });
    socket.once("error", reject);
  });
}
