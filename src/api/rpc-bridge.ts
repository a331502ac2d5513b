/**
 * Lets the plain-HTTP routes call ReportService handlers exactly as an RPC
 * would: each call gets a real HandlerContext, built the way connect-es's
 * own protocol handlers build theirs (createHandlerContext with the method's
 * descriptors, the request's method, URL and headers, the server's shutdown
 * signal, and the caller's context values), and ended with `abort()` when the
 * call is over, which also unlinks it from the shutdown signal. Requests go
 * in and responses come out as messages of the method's own schemas
 * (`create`), so the types follow the descriptors and nothing is cast.
 */
import {
  create,
  type DescMessage,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import { type ContextValues, createHandlerContext, type HandlerContext } from "@connectrpc/connect";
import type { NodeResponse } from "./node-types.js";

/** A unary handler, as a ServiceImpl holds it (connect-es's UnaryImpl, which it does not export). */
type UnaryImpl<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  context: HandlerContext,
) => Promise<MessageInitShape<O>> | MessageInitShape<O>;

/** A server-streaming handler, as a ServiceImpl holds it (connect-es's ServerStreamingImpl). */
type ServerStreamingImpl<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  context: HandlerContext,
) => AsyncIterable<MessageInitShape<O>>;

/** One plain-HTTP request, as the handler's context reports it. */
export interface BridgedCall {
  /** The HTTP method ("POST", "GET"). */
  requestMethod: string;
  url: string;
  requestHeader: Headers;
  /** The caller's context values: its authenticated tenant (auth.ts). */
  values: ContextValues;
  /** Aborts the handler's context: the client went away. */
  signal?: AbortSignal;
}

/**
 * A signal for BridgedCall.signal that aborts (AbortError: CANCELED) when
 * `res` closes before the call is over: the client left. `done()` detaches
 * it; call it once the answer is written.
 */
export function clientLeftSignal(res: NodeResponse): { signal: AbortSignal; done(): void } {
  const left = new AbortController();
  const onClose = () => left.abort();
  res.once("close", onClose);
  return { signal: left.signal, done: () => res.off("close", onClose) };
}

/** A unary handler, callable from plain HTTP. */
export type BridgedUnary<I extends DescMessage, O extends DescMessage> = (
  request: MessageInitShape<I>,
  call: BridgedCall,
) => Promise<MessageShape<O>>;

/** A server-streaming handler, callable from plain HTTP; returning early ends the handler. */
export type BridgedServerStream<I extends DescMessage, O extends DescMessage> = (
  request: MessageInitShape<I>,
  call: BridgedCall,
) => AsyncGenerator<MessageShape<O>, void, undefined>;

/** Binds handlers to the plain-HTTP calling convention. */
export interface RpcBridge {
  unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    impl: UnaryImpl<I, O>,
  ): BridgedUnary<I, O>;
  serverStream<I extends DescMessage, O extends DescMessage>(
    method: DescMethodServerStreaming<I, O>,
    impl: ServerStreamingImpl<I, O>,
  ): BridgedServerStream<I, O>;
}

/** Creates the bridge; `shutdownSignal` is the server's, as connect-node passes it to every RPC. */
export function createRpcBridge(deps: { shutdownSignal: AbortSignal }): RpcBridge {
  const contextFor = (
    method: DescMethodUnary | DescMethodServerStreaming,
    call: BridgedCall,
  ): HandlerContext & { abort(reason?: unknown): void } =>
    createHandlerContext({
      service: method.parent,
      method,
      protocolName: "http",
      requestMethod: call.requestMethod,
      url: call.url,
      shutdownSignal: deps.shutdownSignal,
      requestSignal: call.signal,
      requestHeader: call.requestHeader,
      contextValues: call.values,
    });

  return {
    unary(method, impl) {
      return async (request, call) => {
        const ctx = contextFor(method, call);
        try {
          return create(method.output, await impl(create(method.input, request), ctx));
        } finally {
          ctx.abort();
        }
      };
    },
    serverStream(method, impl) {
      return async function* (request, call) {
        const ctx = contextFor(method, call);
        try {
          for await (const response of impl(create(method.input, request), ctx)) {
            yield create(method.output, response);
          }
        } finally {
          ctx.abort();
        }
      };
    },
  };
}
