/**
 * The plain-HTTP router: a list of routes (method + path pattern → handler)
 * tried in order, the API-key check before a protected handler runs (and
 * before it reads a body), and one place where a failed handler becomes an
 * HTTP error answer (http-responses.ts). The routes themselves are listed in
 * http-routes.ts.
 */
import type { ContextValues } from "@connectrpc/connect";
import type { Logger } from "pino";
import { sendError, sendJson } from "./http-responses.js";
import type { NodeHandler, NodeRequest, NodeResponse } from "./node-types.js";
import type { BridgedCall } from "./rpc-bridge.js";

/** The names of a path pattern's `{name}` segments. */
type ParamNames<P extends string> = P extends `${string}{${infer Name}}${infer Rest}`
  ? Name | ParamNames<Rest>
  : never;

/** The parameters a path pattern yields: `/v1/jobs/{jobId}` gives `{ jobId }`. */
export type PathParams<P extends string> = { readonly [K in ParamNames<P>]: string };

/** One request a route matched. */
export interface RouteRequest<Params = Readonly<Record<string, string>>> {
  req: NodeRequest;
  res: NodeResponse;
  url: URL;
  /** The pattern's `{name}` segments, percent-decoded. */
  params: Params;
  /**
   * The caller's context values (its authenticated tenant), checked once per request.
   * @throws UnauthenticatedError (401) when the request carries no valid API key.
   */
  authenticate(): ContextValues;
}

/** A route's handler: answers the request; a rejection becomes an HTTP error answer. */
export type RouteHandler<Params = Readonly<Record<string, string>>> = (
  request: RouteRequest<Params>,
) => Promise<void> | void;

/**
 * Who may reach a handler: `api-key` checks the caller's key first (401
 * otherwise); `public` leaves it to the handler (probes, the browser app,
 * signed download links).
 */
export type RouteAccess = "api-key" | "public";

/** One entry of the route table. */
export interface Route {
  /** The HTTP methods it answers; "any" for all (the handler may answer 405 itself). */
  methods: readonly string[] | "any";
  /** The path pattern, e.g. `/v1/jobs/{jobId}/events`; a trailing `/*` matches any rest. */
  path: string;
  access: RouteAccess;
  /** Declared as a method so a handler typed by its own path's parameters fits. */
  handle(request: RouteRequest): Promise<void> | void;
}

/** A table entry; `handler` is typed by the parameters of `path`. */
export function route<P extends string>(
  methods: readonly string[] | "any",
  path: P,
  access: RouteAccess,
  handler: RouteHandler<PathParams<P>>,
): Route {
  return { methods, path, access, handle: handler };
}

/** What the router needs besides its routes. */
export interface HttpRouterOptions {
  /** The request's context values with its authenticated tenant; throws UnauthenticatedError. */
  authenticate: (req: NodeRequest) => ContextValues;
  /**
   * Paths under this prefix that no route matches answer 404 only to callers
   * with a valid key (401 otherwise), so the API's paths cannot be probed without one.
   */
  protectedPrefix: string;
  logger: Logger;
}

/** A route with its path compiled. */
interface CompiledRoute {
  route: Route;
  pattern: RegExp;
  names: string[];
}

/** Creates the handler that routes each request to the first matching route, or answers 404. */
export function createHttpRouter(
  routes: readonly Route[],
  options: HttpRouterOptions,
): NodeHandler {
  const { logger } = options;
  const compiled = routes.map(compile);

  const dispatch = async (req: NodeRequest, res: NodeResponse) => {
    const url = new URL(req.url ?? "/", "http://local");
    const method = req.method ?? "GET";
    let values: ContextValues | undefined;
    const authenticate = () => {
      values ??= options.authenticate(req);
      return values;
    };
    for (const { route, pattern, names } of compiled) {
      const match = pattern.exec(url.pathname);
      if (match === null || (route.methods !== "any" && !route.methods.includes(method))) continue;
      const params = Object.fromEntries(names.map((name, i) => [name, safeDecode(match[i + 1])]));
      if (route.access === "api-key") authenticate();
      return route.handle({ req, res, url, params, authenticate });
    }
    if (url.pathname.startsWith(options.protectedPrefix)) authenticate();
    sendJson(res, 404, { code: "not_found", message: `no route for ${method} ${url.pathname}` });
  };

  return (req, res) => {
    dispatch(req, res).catch((err: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      sendError(res, err, logger);
    });
  };
}

/**
 * The handler context of an RPC a route makes for this request (rpc-bridge.ts):
 * its method, URL and headers, and the caller's authenticated context values.
 * @throws UnauthenticatedError when the request carries no valid API key.
 */
export function bridgedCall(request: RouteRequest<unknown>, signal?: AbortSignal): BridgedCall {
  const { req } = request;
  return {
    requestMethod: req.method ?? "GET",
    url: req.url ?? "/",
    requestHeader: fetchHeaders(req),
    values: request.authenticate(),
    signal,
  };
}

/** The request's headers as Fetch Headers (HTTP/2 pseudo-headers left out). */
function fetchHeaders(req: NodeRequest): Headers {
  const h = new Headers();
  for (const [k, v] of Object.entries(req.headers)) {
    if (k.startsWith(":") || v === undefined) continue;
    h.set(k, Array.isArray(v) ? v.join(", ") : v);
  }
  return h;
}

function compile(route: Route): CompiledRoute {
  const names: string[] = [];
  const rest = route.path.endsWith("/*");
  const body = rest ? route.path.slice(0, -2) : route.path;
  const source = body
    .split(/(\{[A-Za-z]\w*\})/)
    .map((part) => {
      const name = /^\{(\w+)\}$/.exec(part)?.[1];
      if (name === undefined) return part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      names.push(name);
      return "([^/]+)";
    })
    .join("");
  return { route, pattern: new RegExp(`^${source}${rest ? "/.*" : ""}$`), names };
}

/** decodeURIComponent that maps malformed escapes to a string no route matches (never throws). */
function safeDecode(segment: string | undefined): string {
  try {
    return decodeURIComponent(segment ?? "");
  } catch {
    return "%";
  }
}
