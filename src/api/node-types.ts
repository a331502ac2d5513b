/** The Node request/response types connect-node hands to handlers (it does not export them by name). */
import type { ConnectNodeAdapterOptions } from "@connectrpc/connect-node";

/** A Node HTTP/1.1 or HTTP/2 request handler as connect-node accepts it. */
export type NodeHandler = NonNullable<ConnectNodeAdapterOptions["fallback"]>;
/** An HTTP/1.1 or HTTP/2 server request. */
export type NodeRequest = Parameters<NodeHandler>[0];
/** An HTTP/1.1 or HTTP/2 server response. */
export type NodeResponse = Parameters<NodeHandler>[1];
