/**
 * Clients for every protocol the server speaks, over connect-node transports.
 */
import { type Client, createClient, type Transport } from "@connectrpc/connect";
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

/** A transport for `protocol` to `baseUrl`. Connect JSON and gRPC-Web use HTTP/1.1; the others HTTP/2. */
export function transportFor(protocol: Protocol, baseUrl: string): Transport {
  switch (protocol) {
    case "connect-json":
      return createConnectTransport({ baseUrl, httpVersion: "1.1", useHttpGet: true });
    case "connect-binary":
      return createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true });
    case "grpc":
      return createGrpcTransport({ baseUrl });
    case "grpc-web":
      return createGrpcWebTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true });
  }
}

/** A typed ReportService client over `protocol`. */
export function reportClient(protocol: Protocol, baseUrl: string): Client<typeof ReportService> {
  return createClient(ReportService, transportFor(protocol, baseUrl));
}
