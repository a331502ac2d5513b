/**
 * Server reflection, v1 and v1alpha, as third-party tools use it: an
 * @grpc/grpc-js client reading gRPC's reflection.proto lists the services
 * and resolves ReportService's descriptors (with every import), and
 * `buf curl --reflect` lists its methods without any proto file.
 */
import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { create, createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import {
  type FileDescriptorProto,
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
} from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestApp, type TestApp } from "../helpers/test-app.js";

const root = fileURLToPath(new URL("../../", import.meta.url));
const protoDir = path.join(root, "proto");

const reportMethods = ["CancelJob", "GetJob", "ListJobs", "RetryJob", "SubmitReport", "WatchJob"];

/** ServerReflectionResponse as proto-loader hands it over (keepCase, oneofs). */
interface ReflectionResponse {
  valid_host: string;
  message_response:
    | "file_descriptor_response"
    | "all_extension_numbers_response"
    | "list_services_response"
    | "error_response";
  file_descriptor_response?: { file_descriptor_proto: Buffer[] };
  all_extension_numbers_response?: { base_type_name: string; extension_number: number[] };
  list_services_response?: { service: { name: string }[] };
  error_response?: { error_code: number; error_message: string };
}
type ReflectionRequest =
  | { file_by_filename: string }
  | { file_containing_symbol: string }
  | { file_containing_extension: { containing_type: string; extension_number: number } }
  | { all_extension_numbers_of_type: string }
  | { list_services: string };
type InfoMethod = () => grpc.ClientDuplexStream<
  ReflectionRequest & { host: string },
  ReflectionResponse
>;

/** One reflection stream; `ask` sends a request and resolves with its answer (answers come in order). */
function reflectionClient(address: string, version: "v1" | "v1alpha") {
  const definition = protoLoader.loadSync(`grpc/reflection/${version}/reflection.proto`, {
    includeDirs: [protoDir],
    keepCase: true,
    defaults: true,
    oneofs: true,
  });
  const loaded = grpc.loadPackageDefinition(definition) as unknown as {
    grpc: { reflection: Record<string, { ServerReflection: grpc.ServiceClientConstructor }> };
  };
  const Service = loaded.grpc.reflection[version]?.ServerReflection;
  if (Service === undefined) throw new Error(`no ServerReflection in ${version}`);
  const client = new Service(address, grpc.credentials.createInsecure());
  const call = (client as unknown as { ServerReflectionInfo: InfoMethod }).ServerReflectionInfo();
  const waiting: { resolve: (r: ReflectionResponse) => void; reject: (e: Error) => void }[] = [];
  call.on("data", (r: ReflectionResponse) => waiting.shift()?.resolve(r));
  let failed: Error | undefined;
  call.on("error", (err: Error) => {
    failed = err;
    for (const w of waiting.splice(0)) w.reject(err);
  });
  return {
    ask(request: ReflectionRequest): Promise<ReflectionResponse> {
      return new Promise((resolve, reject) => {
        if (failed) return reject(failed);
        waiting.push({ resolve, reject });
        call.write({ host: "", ...request });
      });
    },
    close() {
      call.end();
      client.close();
    },
  };
}

function filesOf(r: ReflectionResponse): FileDescriptorProto[] {
  expect(r.message_response, JSON.stringify(r.error_response)).toBe("file_descriptor_response");
  return (r.file_descriptor_response?.file_descriptor_proto ?? []).map((b) =>
    fromBinary(FileDescriptorProtoSchema, b),
  );
}

/** Orders files so each comes after its imports, as a FileDescriptorSet must be. */
function dependenciesFirst(files: FileDescriptorProto[]): FileDescriptorProto[] {
  const out: FileDescriptorProto[] = [];
  const visit = (name: string) => {
    const file = files.find((f) => f.name === name);
    if (file === undefined || out.includes(file)) return;
    for (const dep of file.dependency) visit(dep);
    out.push(file);
  };
  for (const f of files) visit(f.name);
  return out;
}

describe("server reflection", () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({}, { mode: "api" });
  });
  afterAll(async () => {
    await t?.close();
  });

  for (const version of ["v1", "v1alpha"] as const) {
    describe(`grpc.reflection.${version} over @grpc/grpc-js`, () => {
      let client: ReturnType<typeof reflectionClient>;
      beforeAll(() => {
        client = reflectionClient(new URL(t.url).host, version);
      });
      afterAll(() => client?.close());

      it("lists ReportService, Health and both reflection services", async () => {
        const r = await client.ask({ list_services: "" });
        expect(r.message_response).toBe("list_services_response");
        expect(r.list_services_response?.service.map((s) => s.name).sort()).toEqual([
          "grpc.health.v1.Health",
          "grpc.reflection.v1.ServerReflection",
          "grpc.reflection.v1alpha.ServerReflection",
          "reports.v1.ReportService",
        ]);
      });

      it("resolves ReportService's file with every import, well-known types included", async () => {
        const files = filesOf(
          await client.ask({ file_containing_symbol: "reports.v1.ReportService" }),
        );
        expect(files[0]?.name).toBe("reports/v1/report_service.proto");
        const names = files.map((f) => f.name);
        expect(names).toContain("google/protobuf/timestamp.proto");
        expect(names).toContain("reports/v1/job.proto");
        // Every import of every file is in the answer.
        for (const f of files) for (const dep of f.dependency) expect(names, f.name).toContain(dep);
        // A registry builds from the answer alone.
        const registry = createFileRegistry(
          create(FileDescriptorSetSchema, { file: dependenciesFirst(files) }),
        );
        const service = registry.getService("reports.v1.ReportService");
        expect(service?.methods.map((m) => m.name).sort()).toEqual(reportMethods);
        expect(service?.method.watchJob?.methodKind).toBe("server_streaming");
        expect(registry.getMessage("reports.v1.Job")?.field.createdAt?.message?.typeName).toBe(
          "google.protobuf.Timestamp",
        );
      });

      it("finds the file of methods, messages, enums, enum values and fields", async () => {
        const fileOf = async (symbol: string) =>
          filesOf(await client.ask({ file_containing_symbol: symbol }))[0]?.name;
        expect(await fileOf("reports.v1.ReportService.GetJob")).toBe(
          "reports/v1/report_service.proto",
        );
        expect(await fileOf("reports.v1.Job")).toBe("reports/v1/job.proto");
        expect(await fileOf("reports.v1.JobState")).toBe("reports/v1/job.proto");
        expect(await fileOf("reports.v1.JOB_STATE_QUEUED")).toBe("reports/v1/job.proto");
        expect(await fileOf("reports.v1.Job.created_at")).toBe("reports/v1/job.proto");
        expect(await fileOf("grpc.health.v1.Health")).toBe("grpc/health/v1/health.proto");
        expect(await fileOf("google.protobuf.Timestamp")).toBe("google/protobuf/timestamp.proto");
      });

      it("serves files by name", async () => {
        const files = filesOf(await client.ask({ file_by_filename: "reports/v1/job.proto" }));
        expect(files[0]?.name).toBe("reports/v1/job.proto");
        expect(files[0]?.messageType.map((m) => m.name)).toContain("Job");
        const wkt = filesOf(
          await client.ask({ file_by_filename: "google/protobuf/timestamp.proto" }),
        );
        expect(wkt.map((f) => f.name)).toEqual(["google/protobuf/timestamp.proto"]);
      });

      it("answers NOT_FOUND for unknown names and extensions, and lists no extension numbers", async () => {
        for (const request of [
          { file_containing_symbol: "reports.v1.NoSuchThing" },
          { file_by_filename: "reports/v1/nope.proto" },
          {
            file_containing_extension: { containing_type: "reports.v1.Job", extension_number: 100 },
          },
          { all_extension_numbers_of_type: "reports.v1.NoSuchMessage" },
        ]) {
          const r = await client.ask(request);
          expect(r.message_response, JSON.stringify(request)).toBe("error_response");
          expect(r.error_response?.error_code, JSON.stringify(request)).toBe(grpc.status.NOT_FOUND);
        }
        const r = await client.ask({ all_extension_numbers_of_type: "reports.v1.Job" });
        expect(r.message_response).toBe("all_extension_numbers_response");
        expect(r.all_extension_numbers_response).toEqual({
          base_type_name: "reports.v1.Job",
          extension_number: [],
        });
      });
    });
  }

  it("lets `buf curl --reflect --list-methods` list ReportService's six methods", async () => {
    // Asynchronous on purpose: the server runs in this process.
    const { stdout } = await promisify(execFile)(
      path.join(root, "node_modules", ".bin", "buf"),
      ["curl", "--http2-prior-knowledge", "--reflect", "--list-methods", t.url],
      { cwd: root, timeout: 60_000 },
    );
    const methods = stdout
      .split("\n")
      .filter((l) => l.startsWith("reports.v1.ReportService/"))
      .map((l) => l.slice("reports.v1.ReportService/".length))
      .sort();
    expect(methods).toEqual(reportMethods);
    expect(stdout).toContain("grpc.health.v1.Health/Check");
  });
});
