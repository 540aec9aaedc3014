// Bench-only Worker entry for bench/worker-cpu.ts: the real Worker (src/index.ts, under an
// alias the bench's build sets) with V8's CPU profiler running inside its own isolate.
//
// - Its first import, ./profiler.ts, starts V8's profiler through `node:inspector` before the
//   Worker's modules are evaluated, so a fresh isolate is sampled from the start.
// - Every request goes to the real Worker unchanged, with its R2 (and D1) bindings
//   wrapped to count calls; the isolate logs, per request the bench numbered in the
//   `x-bench-request` header, the status and those counts.
// - GET /__bench/profile stops the profiler and answers the profile (Chrome .cpuprofile
//   JSON: nodes, samples, timeDeltas, startTime/endTime in µs of V8's monotonic clock)
//   with the request log since the last call, then starts a new profile (?restart=0: not).
// - /__bench/spin?iterations=n (numbered like any request) spins a known loop: the bench's
//   calibration of the profile against the kernel's CPU accounting.
// - /__bench/scheduled?time=<ms> (numbered like any request) runs the Worker's cron handler
//   as the trigger would at that time, with the same counted bindings, and answers 204 once
//   everything it handed to waitUntil has settled: a cron tick measured like a request.
//
// Nothing of this is deployed: wrangler.toml's entry stays src/index.ts, and production
// workerd refuses the compatibility flag.

// First: the profiler starts before the Worker's modules are evaluated.
import { profilerError, startProfiler, stopProfiler } from "./profiler.ts";
import worker from "nix-edge-cache-worker-under-test";

/** Header with the bench's number for a request. */
const REQUEST_HEADER = "x-bench-request";
const PROFILE_PATH = "/__bench/profile";
const SPIN_PATH = "/__bench/spin";
const SCHEDULED_PATH = "/__bench/scheduled";

interface RequestRecord {
  /** The bench's number for the request (REQUEST_HEADER), or null for other callers. */
  id: string | null;
  status: number;
  /** Binding calls, e.g. {"CACHE.head": 3, "DB.query": 1}. */
  calls: Record<string, number>;
}

/** Requests since the last /__bench/profile. */
let requests: RequestRecord[] = [];
/** The request binding calls are counted for (the bench sends one request at a time). */
let current: RequestRecord | null = null;

// --- counting binding calls -------------------------------------------------------------

/** What is counted on each kind of binding object, and which results get wrapped too. */
type Kind = "r2" | "r2upload" | "d1" | "d1stmt";
const SPEC: Record<Kind, { counted: Record<string, string>; wraps: Record<string, Kind> }> = {
  r2: {
    counted: { head: "head", get: "get", put: "put", delete: "delete", list: "list", createMultipartUpload: "createMultipartUpload" },
    wraps: { createMultipartUpload: "r2upload", resumeMultipartUpload: "r2upload" },
  },
  r2upload: { counted: { uploadPart: "uploadPart", complete: "completeMultipartUpload", abort: "abortMultipartUpload" }, wraps: {} },
  d1: { counted: { batch: "batch", exec: "exec" }, wraps: { prepare: "d1stmt" } },
  d1stmt: { counted: { first: "query", all: "query", run: "query", raw: "query" }, wraps: { bind: "d1stmt" } },
};

/** Proxy → the object it stands for (arguments handed back to the runtime must be real). */
const realOf = new WeakMap<object, object>();

function real(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(real);
  return typeof value === "object" && value !== null ? (realOf.get(value) ?? value) : value;
}

function count(label: string): void {
  if (current !== null) current.calls[label] = (current.calls[label] ?? 0) + 1;
}

/** Adds the rows D1 says a query read and wrote (its result's meta) to the request's counts. */
function countRows(result: unknown, binding: string): void {
  const meta = (result as { meta?: { rows_read?: unknown; rows_written?: unknown } } | null)?.meta;
  if (current === null || meta === undefined) return;
  for (const [field, label] of [["rows_read", "rowsRead"], ["rows_written", "rowsWritten"]] as const) {
    const n = meta[field];
    if (typeof n === "number") current.calls[`${binding}.${label}`] = (current.calls[`${binding}.${label}`] ?? 0) + n;
  }
}

function counted<T extends object>(target: T, kind: Kind, binding: string): T {
  const spec = SPEC[kind];
  const methods = new Map<PropertyKey, unknown>();
  const proxy = new Proxy(target, {
    get(t, prop) {
      const value: unknown = Reflect.get(t, prop);
      if (typeof value !== "function" || typeof prop !== "string") return value;
      let method = methods.get(prop);
      if (method === undefined) {
        const label = spec.counted[prop];
        const wrapAs = spec.wraps[prop];
        // Only D1's batch() is handed objects this file wrapped (prepared statements).
        const unwrap = kind === "d1" && prop === "batch";
        method = (...args: unknown[]): unknown => {
          if (label !== undefined) count(`${binding}.${label}`);
          if (kind === "d1stmt" && prop === "first" && args.length === 0) {
            // first() answers the row without D1's meta: the same statement through all(),
            // whose meta says how many rows D1 read and wrote.
            const all = Reflect.get(t, "all") as () => Promise<{ results: unknown[] }>;
            return Reflect.apply(all, t, []).then((r) => (countRows(r, binding), r.results[0] ?? null));
          }
          const result: unknown = Reflect.apply(value, t, unwrap ? args.map(real) : args);
          if (kind.startsWith("d1") && label !== undefined && result instanceof Promise) {
            return result.then((r: unknown) => {
              for (const one of Array.isArray(r) ? r : [r]) countRows(one, binding);
              return r;
            });
          }
          if (wrapAs === undefined || typeof result !== "object" || result === null) return result;
          if (result instanceof Promise) return result.then((r: unknown) => (typeof r === "object" && r !== null ? counted(r, wrapAs, binding) : r));
          return counted(result, wrapAs, binding);
        };
        methods.set(prop, method);
      }
      return method;
    },
  });
  realOf.set(proxy, target);
  return proxy;
}

function kindOfBinding(value: unknown): Kind | null {
  if (typeof value !== "object" || value === null) return null;
  const v = value as Record<string, unknown>;
  if (typeof v.head === "function" && typeof v.list === "function" && typeof v.createMultipartUpload === "function") return "r2";
  if (typeof v.prepare === "function" && typeof v.batch === "function") return "d1";
  return null;
}

/** One counting view per Env object: the Worker caches its settings per Env (env.ts settingsOf). */
const countingEnvs = new WeakMap<object, object>();

function countingEnv(env: object): object {
  let view = countingEnvs.get(env);
  if (view === undefined) {
    const bindings = new Map<PropertyKey, unknown>();
    view = new Proxy(env, {
      get(t, prop) {
        if (bindings.has(prop)) return bindings.get(prop);
        const value: unknown = Reflect.get(t, prop);
        const kind = kindOfBinding(value);
        const result = kind === null ? value : counted(value as object, kind, String(prop));
        bindings.set(prop, result);
        return result;
      },
    });
    countingEnvs.set(env, view);
  }
  return view;
}

// --- control endpoints ------------------------------------------------------------------

async function profileResponse(url: URL): Promise<Response> {
  const profile = await stopProfiler();
  const body = JSON.stringify({ profile, requests, error: profilerError() });
  requests = [];
  current = null;
  if (url.searchParams.get("restart") !== "0") startProfiler();
  return new Response(body, { headers: { "content-type": "application/json", "cache-control": "no-store" } });
}

/** A loop of known length for calibration; the result is returned so it is not optimised away. */
function spin(iterations: number): number {
  let x = 0;
  for (let i = 0; i < iterations; i++) x = (x + Math.sqrt(i)) % 1e9;
  return x;
}

/** One cron tick of the Worker at `scheduledTime`, its waitUntil work awaited. */
async function scheduledTick(scheduledTime: number, env: object): Promise<Response> {
  if (worker.scheduled === undefined) return new Response("the Worker has no scheduled handler", { status: 501 });
  const pending: unknown[] = [];
  const ctx = { waitUntil: (p: unknown) => void pending.push(p), passThroughOnException: () => {}, props: {} };
  await worker.scheduled({ scheduledTime, cron: "* * * * *", noRetry: () => {} }, env, ctx);
  await Promise.all(pending);
  return new Response(null, { status: 204 });
}

export default {
  ...worker,
  async fetch(request: Request, env: object, ctx: unknown): Promise<Response> {
    // A substring test, not a URL parse: this runs inside every measured request.
    const control = request.url.includes("/__bench/") ? new URL(request.url) : null;
    if (control?.pathname === PROFILE_PATH) return profileResponse(control);
    const record: RequestRecord = { id: request.headers.get(REQUEST_HEADER), status: 0, calls: {} };
    requests.push(record);
    current = record;
    let response: Response;
    if (control?.pathname === SPIN_PATH) {
      response = new Response(String(spin(Number(control.searchParams.get("iterations") ?? 0))));
    } else if (control?.pathname === SCHEDULED_PATH) {
      response = await scheduledTick(Number(control.searchParams.get("time")), countingEnv(env));
    } else {
      response = await worker.fetch(request, countingEnv(env), ctx);
    }
    record.status = response.status;
    return response;
  },
};
