/**
 * A TCP proxy in front of a test Redis that can lose a reply: the fault that
 * makes ioredis resend a command Redis already ran (the connection drops
 * after the command went out and before its reply came back; on reconnect
 * ioredis resends every unanswered command).
 */
import net from "node:net";

/** A running proxy. */
export interface TcpProxy {
  /** redis://127.0.0.1:<port> of the proxy. */
  readonly url: string;
  /**
   * Lets the next reply from the server reach nobody: the proxy swallows it
   * and closes the client's connection. Connections made after that are held
   * (nothing forwarded either way) until `release()`. Resolves once the reply
   * was swallowed.
   */
  loseNextReply(): Promise<void>;
  /** Forwards held connections (and every later one) again. */
  release(): void;
  close(): Promise<void>;
}

/** Starts a proxy to `target` (host:port) on a free port. */
export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const sockets = new Set<net.Socket>();
  let armed: (() => void) | undefined;
  let holding = false;
  const held: Array<() => void> = [];

  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    sockets.add(client);
    sockets.add(upstream);
    const closeBoth = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", closeBoth);
    upstream.on("error", closeBoth);
    client.on("close", closeBoth);
    upstream.on("close", closeBoth);
    const pipe = () => {
      client.on("data", (chunk) => upstream.write(chunk));
      upstream.on("data", (chunk) => {
        const swallowed = armed;
        if (swallowed !== undefined) {
          armed = undefined;
          holding = true;
          closeBoth();
          swallowed();
          return;
        }
        client.write(chunk);
      });
    };
    if (holding) {
      client.pause();
      held.push(() => {
        pipe();
        client.resume();
      });
    } else {
      pipe();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;

  return {
    url: `redis://127.0.0.1:${port}`,
    loseNextReply: () =>
      new Promise<void>((resolve) => {
        armed = resolve;
      }),
    release() {
      holding = false;
      for (const go of held.splice(0)) go();
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
