/**
 * Clients for every protocol the server speaks, over connect-node transports.
 */
import { type Client, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { ReportService } from "../../gen/reports/v1/report_service_pb.js";

/** The protocols under test, with how each one travels. */
export const protocols = ["connect-json", "connect-binary", "grpc", "grpc-web"] as const;

/** One protocol name. */
export type Protocol = (typeof protocols)[number];

/** Client options for tests. */
export interface ClientOptions {
  /** Sent as `Authorization: Bearer <apiKey>` on every call. */
  apiKey?: string;
}

/** An interceptor that sends `Authorization: Bearer <apiKey>`. */
export function bearer(apiKey: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${apiKey}`);
    return next(req);
  };
}

/** A transport for `protocol` to `baseUrl`. Connect JSON and gRPC-Web use HTTP/1.1; the others HTTP/2. */
export function transportFor(
  protocol: Protocol,
  baseUrl: string,
  options: ClientOptions = {},
): Transport {
  const interceptors = options.apiKey === undefined ? [] : [bearer(options.apiKey)];
  switch (protocol) {
    case "connect-json":
      return createConnectTransport({
        baseUrl,
        httpVersion: "1.1",
        useHttpGet: true,
        interceptors,
      });
    case "connect-binary":
      return createConnectTransport({
        baseUrl,
        httpVersion: "2",
        useBinaryFormat: true,
        interceptors,
      });
    case "grpc":
      return createGrpcTransport({ baseUrl, interceptors });
    case "grpc-web":
      return createGrpcWebTransport({
        baseUrl,
        httpVersion: "1.1",
        useBinaryFormat: true,
        interceptors,
      });
  }
}

/** A typed ReportService client over `protocol` (with an API key when `options.apiKey` is set). */
export function reportClient(
  protocol: Protocol,
  baseUrl: string,
  options: ClientOptions = {},
): Client<typeof ReportService> {
  return createClient(ReportService, transportFor(protocol, baseUrl, options));
}
