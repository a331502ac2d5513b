/**
 * gRPC server reflection, v1 and the older v1alpha (grpcurl and many tools
 * still ask for it first), so `grpcurl -plaintext localhost:8080 list` and
 * `buf curl --reflect` work without proto files. The descriptors come from
 * the generated code: every file a registered service is defined in, plus
 * their transitive imports (the well-known types included).
 *
 * The two versions share one implementation: their messages are the same
 * wire format under different package names, so v1alpha requests are
 * re-read as v1 and the answers re-read as v1alpha.
 *
 * Reflection is callable without a key (AUTH_EXEMPT_SERVICES), so its
 * streams are bounded: at most `maxStreams` open in the process, both
 * versions together (then RESOURCE_EXHAUSTED), each for at most
 * `maxDurationMs` (then UNAVAILABLE; tools open a new one).
 */
import {
  create,
  type DescExtension,
  type DescFile,
  type DescMessage,
  type DescService,
  fromBinary,
  toBinary,
} from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, type ConnectRouter } from "@connectrpc/connect";
import {
  ServerReflection,
  type ServerReflectionRequest,
  ServerReflectionRequestSchema,
  type ServerReflectionResponse,
  ServerReflectionResponseSchema,
} from "../../gen/grpc/reflection/v1/reflection_pb.js";
import {
  ServerReflectionRequestSchema as ServerReflectionRequestSchemaV1alpha,
  ServerReflectionResponseSchema as ServerReflectionResponseSchemaV1alpha,
  ServerReflection as ServerReflectionV1alpha,
} from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { createStreamBudget, startStreamDeadline } from "./stream-limits.js";

/** How many reflection streams may be open, and for how long. */
export interface ReflectionLimits {
  /** Open streams in this process, v1 and v1alpha together; 0: no cap. */
  maxStreams: number;
  /** Longest a stream stays open, in ms. */
  maxDurationMs: number;
}

/** What reflection can describe. */
interface Registry {
  /** Full names of the services on the port, sorted. */
  services: string[];
  /** Every known file by its path (`reports/v1/job.proto`). */
  files: Map<string, DescFile>;
  /** The file declaring each fully-qualified symbol. */
  symbols: Map<string, DescFile>;
  /** Every known extension (none today, but answered properly if one appears). */
  extensions: DescExtension[];
  /** Every known message by full name (extension queries name one). */
  messages: Map<string, DescMessage>;
}

/**
 * Registers ServerReflection v1 and v1alpha on `router`. They describe every
 * service registered on the router (themselves included), looked up on the
 * first request, so register this after the other services. `extraFiles`
 * adds files no service imports, such as the error-detail types.
 */
export function addReflection(
  router: ConnectRouter,
  extraFiles: readonly DescFile[],
  limits: ReflectionLimits,
): void {
  let registry: Registry | undefined;
  const streams = createStreamBudget("reflection streams", limits.maxStreams);
  /** Each request of a stream, until the client ends it or the stream's maximum duration passes. */
  async function* bounded<T>(requests: AsyncIterable<T>): AsyncGenerator<T> {
    const release = streams.acquire();
    const deadline = startStreamDeadline("reflection stream", limits.maxDurationMs);
    const it = requests[Symbol.asyncIterator]();
    try {
      for (;;) {
        const next = it.next();
        // Settled later when the deadline wins; never an unhandled rejection.
        next.catch(() => undefined);
        const result = await Promise.race([next, deadline.reached.then(() => undefined)]);
        if (result === undefined) throw deadline.error();
        if (result.done) return;
        yield result.value;
      }
    } finally {
      release();
      deadline.clear();
    }
  }
  const answer = (req: ServerReflectionRequest): ServerReflectionResponse => {
    registry ??= buildRegistry(
      router.handlers.map((h) => h.service),
      extraFiles,
    );
    return respond(registry, req);
  };

  router.service(ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const req of bounded(requests)) yield answer(req);
    },
  });
  router.service(ServerReflectionV1alpha, {
    async *serverReflectionInfo(requests) {
      for await (const req of bounded(requests)) {
        const v1 = fromBinary(
          ServerReflectionRequestSchema,
          toBinary(ServerReflectionRequestSchemaV1alpha, req),
        );
        yield fromBinary(
          ServerReflectionResponseSchemaV1alpha,
          toBinary(ServerReflectionResponseSchema, answer(v1)),
        );
      }
    },
  });
}

function buildRegistry(services: DescService[], extraFiles: readonly DescFile[]): Registry {
  const registry: Registry = {
    services: [...new Set(services.map((s) => s.typeName))].sort(),
    files: new Map(),
    symbols: new Map(),
    extensions: [],
    messages: new Map(),
  };
  const addFile = (file: DescFile) => {
    const name = fileName(file);
    if (registry.files.has(name)) return;
    registry.files.set(name, file);
    for (const dep of file.dependencies) addFile(dep);
    const symbol = (fullName: string) => registry.symbols.set(fullName, file);
    // Enum values live in the scope that encloses their enum (protobuf's C++ scoping).
    const scopeOf = (typeName: string) => typeName.slice(0, Math.max(0, typeName.lastIndexOf(".")));
    const addEnum = (e: DescFile["enums"][number]) => {
      symbol(e.typeName);
      const scope = scopeOf(e.typeName);
      for (const v of e.values) symbol(scope === "" ? v.name : `${scope}.${v.name}`);
    };
    const addExtension = (x: DescExtension) => {
      symbol(x.typeName);
      registry.extensions.push(x);
    };
    const addMessage = (m: DescMessage) => {
      symbol(m.typeName);
      registry.messages.set(m.typeName, m);
      for (const f of m.fields) symbol(`${m.typeName}.${f.name}`);
      for (const o of m.oneofs) symbol(`${m.typeName}.${o.name}`);
      for (const n of m.nestedMessages) addMessage(n);
      for (const e of m.nestedEnums) addEnum(e);
      for (const x of m.nestedExtensions) addExtension(x);
    };
    for (const m of file.messages) addMessage(m);
    for (const e of file.enums) addEnum(e);
    for (const x of file.extensions) addExtension(x);
    for (const s of file.services) {
      symbol(s.typeName);
      for (const method of s.methods) symbol(`${s.typeName}.${method.name}`);
    }
  };
  for (const s of services) addFile(s.file);
  for (const f of extraFiles) addFile(f);
  return registry;
}

function respond(registry: Registry, req: ServerReflectionRequest): ServerReflectionResponse {
  const base = { validHost: req.host, originalRequest: req };
  const files = (file: DescFile): ServerReflectionResponse =>
    create(ServerReflectionResponseSchema, {
      ...base,
      messageResponse: {
        case: "fileDescriptorResponse",
        value: { fileDescriptorProto: withDependencies(file).map(serialize) },
      },
    });
  const error = (code: Code, message: string): ServerReflectionResponse =>
    create(ServerReflectionResponseSchema, {
      ...base,
      messageResponse: {
        case: "errorResponse",
        value: { errorCode: code, errorMessage: message },
      },
    });

  const request = req.messageRequest;
  switch (request.case) {
    case "listServices":
      return create(ServerReflectionResponseSchema, {
        ...base,
        messageResponse: {
          case: "listServicesResponse",
          value: { service: registry.services.map((name) => ({ name })) },
        },
      });
    case "fileByFilename": {
      const file = registry.files.get(request.value);
      return file ? files(file) : error(Code.NotFound, `file "${request.value}" not found`);
    }
    case "fileContainingSymbol": {
      const name = request.value.replace(/^\./, "");
      const file = registry.symbols.get(name);
      return file ? files(file) : error(Code.NotFound, `symbol "${name}" not found`);
    }
    case "fileContainingExtension": {
      const { containingType, extensionNumber } = request.value;
      const ext = registry.extensions.find(
        (x) => x.extendee.typeName === containingType && x.number === extensionNumber,
      );
      return ext
        ? files(ext.file)
        : error(
            Code.NotFound,
            `no extension ${extensionNumber} of "${containingType}" is known to this server`,
          );
    }
    case "allExtensionNumbersOfType": {
      const typeName = request.value.replace(/^\./, "");
      if (!registry.messages.has(typeName)) {
        return error(Code.NotFound, `message type "${typeName}" not found`);
      }
      return create(ServerReflectionResponseSchema, {
        ...base,
        messageResponse: {
          case: "allExtensionNumbersResponse",
          value: {
            baseTypeName: typeName,
            extensionNumber: registry.extensions
              .filter((x) => x.extendee.typeName === typeName)
              .map((x) => x.number),
          },
        },
      });
    }
    default:
      return error(Code.InvalidArgument, "the request names no reflection query");
  }
}

/** The file first, then every file it imports, transitively, each once. */
function withDependencies(file: DescFile): DescFile[] {
  const out: DescFile[] = [];
  const seen = new Set<string>();
  const visit = (f: DescFile) => {
    if (seen.has(fileName(f))) return;
    seen.add(fileName(f));
    out.push(f);
    for (const d of f.dependencies) visit(d);
  };
  visit(file);
  return out;
}

function fileName(file: DescFile): string {
  return file.proto.name;
}

function serialize(file: DescFile): Uint8Array {
  return toBinary(FileDescriptorProtoSchema, file.proto);
}
