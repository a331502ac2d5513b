/**
 * Lean watch clients for the load process: many live watches of job events
 * at a small CPU cost per event. Ours: WatchJob as gRPC server streams,
 * multiplexed over a few HTTP/2 connections. The naive baseline: one
 * Server-Sent Events response per watcher over its own HTTP/1.1 connection.
 */
import http from "node:http";
import http2 from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { JobEventType } from "../gen/reports/v1/job_pb.js";
import {
  WatchJobRequestSchema,
  WatchJobResponseSchema,
} from "../gen/reports/v1/report_service_pb.js";

/** What one watch reports. */
export interface WatchHandlers {
  /** The watch is open (ours: its first message, the replayed history; baseline: its headers). */
  onOpen(): void;
  /** An event, by its stream entry id (`<ms>-<seq>`). */
  onEvent(id: string): void;
  /** The watch ended: after its terminal event, or with an error. */
  onEnd(err?: Error): void;
}

/** Opens watches; `close` ends every one still open and the connections. */
export interface Watches {
  watch(jobId: string, handlers: WatchHandlers): void;
  close(): void;
}

const terminalTypes = new Set([
  JobEventType.SUCCEEDED,
  JobEventType.FAILED,
  JobEventType.CANCELLED,
]);

/** WatchJob over gRPC, the watches spread over `sessions` HTTP/2 connections. */
export function grpcWatches(baseUrl: string, sessions: number): Watches {
  const conns = Array.from({ length: Math.max(1, sessions) }, () => {
    const s = http2.connect(baseUrl);
    s.on("error", () => undefined);
    return s;
  });
  const streams = new Set<http2.ClientHttp2Stream>();
  let next = 0;
  return {
    watch(jobId, h) {
      const session = conns[next++ % conns.length] as http2.ClientHttp2Session;
      const stream = session.request({
        ":method": "POST",
        ":path": "/reports.v1.ReportService/WatchJob",
        "content-type": "application/grpc+proto",
        te: "trailers",
      });
      streams.add(stream);
      let opened = false;
      let ended = false;
      let sawTerminal = false;
      let status: string | undefined;
      let buf: Buffer = Buffer.alloc(0);
      const end = (err?: Error) => {
        if (ended) return;
        ended = true;
        streams.delete(stream);
        h.onEnd(err);
      };
      stream.on("response", (headers) => {
        if (headers["grpc-status"] !== undefined) status = String(headers["grpc-status"]);
      });
      stream.on("trailers", (t) => {
        status = String(t["grpc-status"]);
      });
      stream.on("data", (chunk: Buffer) => {
        buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
        while (buf.length >= 5) {
          const len = buf.readUInt32BE(1);
          if (buf.length < 5 + len) break;
          const msg = fromBinary(WatchJobResponseSchema, buf.subarray(5, 5 + len));
          buf = buf.subarray(5 + len);
          if (!opened) {
            opened = true;
            h.onOpen();
          }
          if (msg.event !== undefined) {
            h.onEvent(msg.event.id);
            if (terminalTypes.has(msg.event.type)) sawTerminal = true;
          }
        }
      });
      stream.on("end", () =>
        end(
          status === "0" && sawTerminal
            ? undefined
            : new Error(`WatchJob ended with grpc-status ${status ?? "missing"}`),
        ),
      );
      stream.on("error", (err) => end(err));
      stream.on("close", () => end(new Error("WatchJob stream closed")));
      const msg = toBinary(WatchJobRequestSchema, create(WatchJobRequestSchema, { jobId }));
      const frame = Buffer.alloc(5 + msg.length);
      frame.writeUInt32BE(msg.length, 1);
      frame.set(msg, 5);
      stream.end(frame);
    },
    close() {
      for (const s of streams) s.close(http2.constants.NGHTTP2_CANCEL);
      for (const c of conns) c.close();
    },
  };
}

/** The naive baseline's watch: GET /v1/jobs/{id}/events (SSE), one connection each. */
export function sseWatches(baseUrl: string): Watches {
  const u = new URL(baseUrl);
  const agent = new http.Agent({ keepAlive: false });
  const requests = new Set<http.ClientRequest>();
  return {
    watch(jobId, h) {
      let ended = false;
      let sawTerminal = false;
      const end = (err?: Error) => {
        if (ended) return;
        ended = true;
        requests.delete(req);
        h.onEnd(err);
      };
      const req = http.request(
        {
          agent,
          host: u.hostname,
          port: Number(u.port),
          method: "GET",
          path: `/v1/jobs/${encodeURIComponent(jobId)}/events`,
          headers: { accept: "text/event-stream" },
        },
        (res) => {
          if (res.statusCode !== 200) {
            res.resume();
            end(new Error(`watch: HTTP ${res.statusCode}`));
            return;
          }
          h.onOpen();
          res.setEncoding("utf8");
          let text = "";
          res.on("data", (chunk: string) => {
            text += chunk;
            for (let i = text.indexOf("\n\n"); i >= 0; i = text.indexOf("\n\n")) {
              const block = text.slice(0, i);
              text = text.slice(i + 2);
              const id = /^id: (.+)$/m.exec(block)?.[1];
              if (id !== undefined) h.onEvent(id);
              if (/"type":"(completed|failed)"/.test(block)) sawTerminal = true;
            }
          });
          res.on("end", () =>
            end(sawTerminal ? undefined : new Error("watch ended before a terminal event")),
          );
          res.on("error", (err) => end(err));
        },
      );
      requests.add(req);
      req.on("error", (err) => end(err));
      req.end();
    },
    close() {
      for (const r of requests) r.destroy();
      agent.destroy();
    },
  };
}
