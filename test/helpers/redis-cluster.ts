/**
 * A private Redis Cluster for tests, made of `redis-server` processes on free
 * ports (never the machine's shared Redis): N masters (3 by default) and R
 * replicas per master, joined with `redis-cli --cluster create` (by hand for
 * 1 or 2 masters, which redis-cli refuses). Fault tests kill, pause and
 * restart its nodes and wait for a replica's promotion.
 *
 * `cluster-node-timeout` is 2000 ms by default (Redis' default is 15000): a
 * killed master is marked failed after about that long, and its replica is
 * promoted about 1-2 s later (election delay 500 ms + up to 500 ms random +
 * gossip), so a failover takes about 3-5 s here. The flip side: a node paused
 * (SIGSTOP) or starved of CPU for longer than the timeout is failed over too.
 * A master turns its cluster state ok only 2 s after it started (Redis'
 * CLUSTER_WRITABLE_DELAY), so no cluster is ready in under about 2.5 s.
 *
 * Every process and folder is removed by `stop()`, and, should a test file
 * crash before calling it, when the test process exits.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { Cluster, type ClusterOptions, Redis } from "ioredis";
import { isListening } from "../../src/queue/private-redis.js";
import { waitFor } from "./wait-for.js";

const runFile = promisify(execFile);

/** Slots in a Redis Cluster. */
export const CLUSTER_SLOTS = 16_384;

/** A cluster node as any test sees it. */
export interface ClusterNode {
  readonly port: number;
  /** `127.0.0.1:port`, as the node announces itself. */
  readonly address: string;
  /** A connection to this node alone (closed with its cluster); fails fast when the node is down. */
  readonly admin: Redis;
}

/** A redis-server of a cluster this process started: it can be killed, paused and restarted. */
export interface ClusterNodeHandle extends ClusterNode {
  readonly dir: string;
  /** The node's cluster id (`CLUSTER MYID`). */
  readonly id: string;
  /** False once killed, until restarted. */
  readonly running: boolean;
  /** Kills the process (SIGKILL by default) and waits for it to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Freezes the node (SIGSTOP): connections stay open, nothing answers, gossip stops. */
  pause(): void;
  /** Thaws a paused node (SIGCONT). */
  resume(): void;
  /** Starts it again on the same port and folder: its nodes.conf and AOF are reloaded. */
  restart(): Promise<void>;
}

/** One master, the replicas following it and the slot ranges it serves. */
export interface ClusterShard<N extends ClusterNode = ClusterNode> {
  master: N;
  replicas: N[];
  /** Inclusive [first, last] slot ranges. */
  slots: [number, number][];
}

/** What a test can ask of any cluster: who serves what, and clients. */
export interface ClusterView<N extends ClusterNode = ClusterNode> {
  /** Every node. */
  readonly nodes: readonly N[];
  /** Every node as `host:port,...`: the format of REDIS_CLUSTER_NODES. */
  readonly seeds: string;
  /** The seeds as ioredis `Cluster` startup nodes. */
  readonly startupNodes: { host: string; port: number }[];
  /** Masters serving slots (in slot order), with their replicas, as a running node sees them now. */
  shards(): Promise<ClusterShard<N>[]>;
  /** The slot of a key (`CLUSTER KEYSLOT`: a `{tag}` in it decides). */
  keySlot(key: string): Promise<number>;
  /** The master serving `key`'s slot now. */
  masterForKey(key: string): Promise<N>;
  /** The master serving the slot of hash tag `tag` (of keys containing `{tag}`). */
  masterForTag(tag: string): Promise<N>;
  /**
   * Waits until every running node says `cluster_state:ok`, all agree on who
   * serves which slot (running masters only, every slot), and every running
   * replica's link to its master is up and not syncing.
   */
  waitUntilHealthy(timeoutMs?: number): Promise<void>;
  /** An ioredis Cluster client on the seeds (with an `error` listener); closed with the view. */
  client(options?: ClusterOptions): Cluster;
}

/** What a failover did. */
export interface Failover {
  killed: ClusterNodeHandle;
  promoted: ClusterNodeHandle;
  /** From the kill until every running node agreed on the new master and said `cluster_state:ok`. */
  ms: number;
}

/** A running test cluster this process started. */
export interface RedisClusterHandle extends ClusterView<ClusterNodeHandle> {
  readonly nodeTimeoutMs: number;
  /** How long the start took, from the first spawn to a healthy cluster. */
  readonly startMs: number;
  /**
   * SIGKILLs `master` (a master serving slots), waits for one of its replicas
   * to be promoted and the cluster to be healthy again.
   */
  failover(master: ClusterNodeHandle, timeoutMs?: number): Promise<Failover>;
  /** Kills every node, closes every client, removes every folder. Idempotent. */
  stop(): Promise<void>;
}

/** A view of a cluster started elsewhere (e.g. by the global setup). */
export interface AttachedCluster extends ClusterView {
  /** Closes its connections and clients. Idempotent. */
  close(): void;
}

/** How to build the cluster. */
export interface RedisClusterOptions {
  /** Masters, each serving an equal range of the slots (default 3). */
  masters?: number;
  /** Replicas per master (default 0). */
  replicasPerMaster?: number;
  /** `cluster-node-timeout` in ms (default 2000). */
  nodeTimeoutMs?: number;
  /** Extra redis-server options for every node (given later, they override). */
  args?: string[];
}

// Processes and folders to remove when the test process exits without stop().
const livePids = new Set<number>();
const liveDirs = new Set<string>();
let exitHookInstalled = false;
function installExitHook() {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  const cleanup = () => {
    for (const pid of livePids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
    // A killed node can still write its log for a moment: removing its folder
    // fails until it is gone, so retry a little (synchronously: the process is exiting).
    const pause = new Int32Array(new SharedArrayBuffer(4));
    for (const dir of liveDirs) {
      for (let attempt = 1; ; attempt++) {
        try {
          rmSync(dir, { recursive: true, force: true });
          break;
        } catch (err) {
          if (attempt >= 50) throw err;
          Atomics.wait(pause, 0, 0, 20);
        }
      }
    }
  };
  process.once("exit", cleanup);
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(signal, () => {
      cleanup();
      process.kill(process.pid, signal);
    });
  }
}

/** True when a listener can bind 127.0.0.1:`port` right now. */
function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once("error", () => resolve(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
  });
}

/**
 * A port P with P and P + 10000 (its cluster bus) both free, P below 55536 so
 * that the bus port exists; never one of `taken` or their bus ports.
 */
async function clusterPort(taken: Set<number>): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 35_536);
    if (taken.has(port) || taken.has(port + 10_000) || taken.has(port - 10_000)) continue;
    if ((await canBind(port)) && (await canBind(port + 10_000))) {
      taken.add(port);
      return port;
    }
  }
  throw new Error("no free port pair (P, P+10000) found for a cluster node");
}

/** One line of `CLUSTER NODES`. */
interface NodeLine {
  id: string;
  port: number;
  flags: string[];
  masterId: string | undefined;
  slots: [number, number][];
}

/** Parses `CLUSTER NODES` (migrating-slot entries like `[5->-id]` are skipped). */
function parseClusterNodes(text: string): NodeLine[] {
  return text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "")
    .map((line) => {
      const [id = "", addr = "", flags = "", master = "-", , , , , ...slots] = line.split(" ");
      return {
        id,
        port: Number(/:(\d+)@/.exec(addr)?.[1]),
        flags: flags.split(","),
        masterId: master === "-" ? undefined : master,
        slots: slots
          .filter((s) => !s.startsWith("["))
          .map((s): [number, number] => {
            const [a = "", b = a] = s.split("-");
            return [Number(a), Number(b)];
          }),
      };
    });
}

/**
 * A connection to one node that fails fast instead of queueing when the node
 * is down or frozen; an eager one (`lazyConnect` false) queues commands sent
 * before its first connect.
 */
function adminConnection(port: number, lazyConnect: boolean): Redis {
  const admin = new Redis({
    host: "127.0.0.1",
    port,
    lazyConnect,
    enableOfflineQueue: !lazyConnect,
    maxRetriesPerRequest: 0,
    commandTimeout: 2_000,
    connectTimeout: 1_000,
    retryStrategy: () => 100,
  });
  admin.on("error", () => {});
  return admin;
}

/**
 * The parts of a view shared by started and attached clusters: `nodes` is
 * every node, `running` those that should answer.
 */
function createView<N extends ClusterNode>(
  nodes: readonly N[],
  running: () => N[],
  clients: Set<Redis | Cluster>,
): ClusterView<N> {
  const byPort = (port: number) => nodes.find((n) => n.port === port);
  const viewOf = async (node: N): Promise<NodeLine[]> =>
    parseClusterNodes(String(await node.admin.call("CLUSTER", "NODES")));

  const shardsFrom = (lines: NodeLine[]): ClusterShard<N>[] =>
    lines
      .filter((l) => l.flags.includes("master") && l.slots.length > 0)
      .map((l) => {
        const master = byPort(l.port);
        if (master === undefined) throw new Error(`unknown node on port ${l.port}`);
        return {
          master,
          replicas: lines
            .filter((r) => r.masterId === l.id)
            .map((r) => byPort(r.port))
            .filter((n): n is N => n !== undefined),
          slots: l.slots,
        };
      })
      .sort((a, b) => (a.slots[0]?.[0] ?? 0) - (b.slots[0]?.[0] ?? 0));

  /** The answer of the first running node that answers. */
  const ask = async <T>(what: (node: N) => Promise<T>): Promise<T> => {
    let last: unknown;
    for (const n of running()) {
      try {
        return await what(n);
      } catch (err) {
        last = err;
      }
    }
    throw new Error("no running cluster node answered", { cause: last });
  };

  const runningPorts = () => new Set(running().map((n) => n.port));

  /** The slot map and replication as `node` sees them, as a string, or false when not healthy. */
  const healthOf = async (node: N): Promise<string | false> => {
    const info = String(await node.admin.call("CLUSTER", "INFO"));
    if (!info.includes("cluster_state:ok")) return false;
    const lines = await viewOf(node);
    if (lines.length !== nodes.length) return false;
    const shards = shardsFrom(lines);
    const up = runningPorts();
    if (shards.some((s) => !up.has(s.master.port))) return false;
    const covered = shards.reduce(
      (sum, s) => sum + s.slots.reduce((n, [a, b]) => n + b - a + 1, 0),
      0,
    );
    if (covered !== CLUSTER_SLOTS) return false;
    return shards
      .map((s) => {
        const slots = s.slots.map((r) => r.join("-")).join(",");
        const replicas = s.replicas.filter((r) => up.has(r.port)).map((r) => r.port);
        return `${s.master.port}[${slots}]<${replicas.sort().join(",")}`;
      })
      .join(" ");
  };

  const view: ClusterView<N> = {
    nodes,
    seeds: nodes.map((n) => n.address).join(","),
    startupNodes: nodes.map((n) => ({ host: "127.0.0.1", port: n.port })),
    shards: () => ask(async (n) => shardsFrom(await viewOf(n))),
    keySlot: (key) => ask(async (n) => Number(await n.admin.call("CLUSTER", "KEYSLOT", key))),
    async masterForKey(key) {
      const slot = await view.keySlot(key);
      const shard = (await view.shards()).find((s) =>
        s.slots.some(([a, b]) => slot >= a && slot <= b),
      );
      if (shard === undefined) throw new Error(`no master serves slot ${slot}`);
      return shard.master;
    },
    masterForTag: (tag) => view.masterForKey(`{${tag}}`),
    async waitUntilHealthy(timeoutMs = 30_000) {
      await waitFor(
        async () => {
          const views = await Promise.all(running().map(healthOf));
          const [first] = views;
          if (first === undefined || first === false || views.some((v) => v !== first)) {
            return false;
          }
          for (const n of running()) {
            const repl = String(await n.admin.info("replication"));
            if (!repl.includes("role:slave")) continue;
            if (!repl.includes("master_link_status:up")) return false;
            if (repl.includes("master_sync_in_progress:1")) return false;
          }
          return true;
        },
        { timeoutMs, intervalMs: 50, what: "the cluster to be healthy" },
      );
    },
    client(options = {}) {
      const c = new Cluster(view.startupNodes, options);
      c.on("error", () => {});
      clients.add(c);
      return c;
    },
  };
  return view;
}

/** Shell-free redis-server arguments of one node. */
function nodeArgs(port: number, dir: string, nodeTimeoutMs: number, extra: string[]): string[] {
  return [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--dir",
    dir,
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    String(nodeTimeoutMs),
    // A node learns its own address from a peer's MEET: a lone master would
    // otherwise tell clients its slots are served by ":port".
    "--cluster-announce-ip",
    "127.0.0.1",
    "--appendonly",
    "yes",
    "--appendfsync",
    "always",
    "--save",
    "",
    "--maxmemory-policy",
    "noeviction",
    "--logfile",
    "redis.log",
    "--maxclients",
    "20000",
    // A replica's first sync starts at once instead of waiting 5 s for others to join it.
    "--repl-diskless-sync-delay",
    "0",
    ...extra,
  ];
}

/** The last lines of a node's log, for an error message. */
function logTail(dir: string): string {
  try {
    return readFileSync(path.join(dir, "redis.log"), "utf8")
      .trim()
      .split("\n")
      .slice(-5)
      .join("\n");
  } catch {
    return "(no log)";
  }
}

interface OwnNode extends ClusterNodeHandle {
  id: string;
  launch(): Promise<void>;
}

function createNode(port: number, dir: string, args: string[]): OwnNode {
  mkdirSync(dir, { recursive: true });
  let child: ChildProcess | undefined;
  const alive = () => child !== undefined && child.exitCode === null && child.signalCode === null;
  const admin = adminConnection(port, true);
  const node: OwnNode = {
    port,
    address: `127.0.0.1:${port}`,
    dir,
    id: "",
    get running() {
      return alive();
    },
    admin,
    async launch() {
      const c = spawn("redis-server", args, { stdio: "ignore" });
      child = c;
      const pid = c.pid;
      if (pid !== undefined) {
        livePids.add(pid);
        c.once("exit", () => livePids.delete(pid));
      }
      const deadline = Date.now() + 10_000;
      while (!(await isListening("127.0.0.1", port, 200))) {
        if (c.exitCode !== null || Date.now() > deadline) {
          c.kill("SIGKILL");
          throw new Error(`redis-server on ${port} did not start:\n${logTail(dir)}`);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      if (admin.status === "wait" || admin.status === "end") await admin.connect();
      await waitFor(() => admin.status === "ready", { what: `the admin connection to ${port}` });
    },
    async kill(signal: NodeJS.Signals = "SIGKILL") {
      const c = child;
      if (c === undefined || !alive()) return;
      const exited = new Promise<void>((resolve) => c.once("exit", () => resolve()));
      c.kill(signal);
      // A paused process acts on SIGTERM only once it runs again.
      c.kill("SIGCONT");
      await exited;
    },
    pause: () => void child?.kill("SIGSTOP"),
    resume: () => void child?.kill("SIGCONT"),
    restart: () => node.launch(),
  };
  return node;
}

/**
 * `redis-cli --cluster create`: it makes the first `masters` addresses
 * masters with equal slot ranges and gives each `replicasPerMaster` of the
 * others (its choice of pairing; shards() reads who follows whom).
 */
async function createWithRedisCli(nodes: readonly ClusterNode[], replicasPerMaster: number) {
  try {
    await runFile(
      "redis-cli",
      [
        "--cluster",
        "create",
        ...nodes.map((n) => n.address),
        "--cluster-replicas",
        String(replicasPerMaster),
        "--cluster-yes",
      ],
      { timeout: 60_000 },
    );
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`redis-cli --cluster create failed: ${e.stderr || e.stdout || e.message}`);
  }
}

/**
 * What `redis-cli --cluster create` does, for the 1 or 2 masters it refuses
 * to build: equal slot ranges, a distinct config epoch each, MEET, then the
 * replicas (the nodes after the masters, round robin) REPLICATE their master.
 */
async function createByHand(nodes: readonly OwnNode[], masters: number) {
  const heads = nodes.slice(0, masters);
  for (const [i, m] of heads.entries()) {
    const first = Math.floor((i * CLUSTER_SLOTS) / masters);
    const last = Math.floor(((i + 1) * CLUSTER_SLOTS) / masters) - 1;
    await m.admin.call("CLUSTER", "ADDSLOTSRANGE", first, last);
  }
  for (const [i, n] of nodes.entries()) await n.admin.call("CLUSTER", "SET-CONFIG-EPOCH", i + 1);
  const seed = nodes[0]?.port ?? 0;
  for (const n of nodes.slice(1)) await n.admin.call("CLUSTER", "MEET", "127.0.0.1", seed);
  // A node can only replicate a master it already knows.
  await waitFor(
    async () => {
      for (const n of nodes) {
        const lines = parseClusterNodes(String(await n.admin.call("CLUSTER", "NODES")));
        if (lines.length !== nodes.length) return false;
      }
      return true;
    },
    { what: "every node to know every other" },
  );
  for (const [i, r] of nodes.slice(masters).entries()) {
    await r.admin.call("CLUSTER", "REPLICATE", heads[i % masters]?.id ?? "");
  }
}

/**
 * Starts a cluster and waits until it is healthy (every slot served, every
 * replica in sync). Stop it with `stop()`, in an `afterAll` or `onTestFinished`.
 */
export async function startRedisCluster(
  options: RedisClusterOptions = {},
): Promise<RedisClusterHandle> {
  const masters = options.masters ?? 3;
  const replicasPerMaster = options.replicasPerMaster ?? 0;
  const nodeTimeoutMs = options.nodeTimeoutMs ?? 2_000;
  if (!Number.isInteger(masters) || masters < 1) throw new Error("masters must be >= 1");
  if (!Number.isInteger(replicasPerMaster) || replicasPerMaster < 0)
    throw new Error("replicasPerMaster must be >= 0");
  installExitHook();
  const began = Date.now();
  const root = mkdtempSync(path.join(tmpdir(), "report-jobs-cluster-"));
  liveDirs.add(root);
  const clients = new Set<Redis | Cluster>();
  const nodes: OwnNode[] = [];
  let stopped = false;

  const stop = async () => {
    if (stopped) return;
    stopped = true;
    for (const c of clients) c.disconnect();
    await Promise.all(nodes.map((n) => n.kill("SIGKILL")));
    rmSync(root, { recursive: true, force: true });
    liveDirs.delete(root);
  };

  let view: ClusterView<ClusterNodeHandle>;
  try {
    const taken = new Set<number>();
    const total = masters * (1 + replicasPerMaster);
    for (let i = 0; i < total; i++) {
      // A port free when checked can be taken before redis-server binds it: then take another.
      for (let attempt = 1; ; attempt++) {
        const port = await clusterPort(taken);
        const dir = path.join(root, String(port));
        const node = createNode(port, dir, nodeArgs(port, dir, nodeTimeoutMs, options.args ?? []));
        clients.add(node.admin);
        try {
          await node.launch();
          nodes.push(node);
          break;
        } catch (err) {
          node.admin.disconnect();
          clients.delete(node.admin);
          rmSync(dir, { recursive: true, force: true });
          if (attempt >= 3) throw err;
        }
      }
    }
    for (const n of nodes) n.id = String(await n.admin.call("CLUSTER", "MYID"));
    if (masters >= 3) await createWithRedisCli(nodes, replicasPerMaster);
    else await createByHand(nodes, masters);
    view = createView<ClusterNodeHandle>(nodes, () => nodes.filter((n) => n.running), clients);
    await view.waitUntilHealthy(60_000);
  } catch (err) {
    await stop();
    throw err;
  }

  return {
    ...view,
    nodeTimeoutMs,
    startMs: Date.now() - began,
    async failover(master, timeoutMs = 30_000) {
      const shard = (await view.shards()).find((s) => s.master === master);
      if (shard === undefined) throw new Error(`${master.port} is not a master serving slots`);
      if (!shard.replicas.some((r) => r.running)) {
        throw new Error(`${master.port} has no running replica to promote`);
      }
      const t0 = Date.now();
      await master.kill("SIGKILL");
      await view.waitUntilHealthy(timeoutMs);
      const ms = Date.now() - t0;
      const promoted = (await view.shards()).find((s) => shard.replicas.includes(s.master))?.master;
      if (promoted === undefined) throw new Error(`no replica of ${master.port} was promoted`);
      return { killed: master, promoted, ms };
    },
    stop,
  };
}

/**
 * A view of a running cluster from its seeds (`host:port,...`, every node):
 * e.g. the shared cluster of the global setup. Close it in an `afterAll`.
 */
export function attachRedisCluster(seeds: string): AttachedCluster {
  const clients = new Set<Redis | Cluster>();
  const nodes = seeds.split(",").map((address): ClusterNode => {
    const port = Number(address.split(":").at(-1));
    const admin = adminConnection(port, false);
    clients.add(admin);
    return { port, address: `127.0.0.1:${port}`, admin };
  });
  const view = createView(nodes, () => nodes, clients);
  let closed = false;
  return {
    ...view,
    close() {
      if (closed) return;
      closed = true;
      for (const c of clients) c.disconnect();
    },
  };
}
