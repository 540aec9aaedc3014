// Benchmark: CPU per request kind, measured inside workerd with V8's own CPU profiler,
// against the free plan's 10 ms of CPU per request.
//
// The Worker runs locally under wrangler's DevEnv (what `unstable_startWorker` runs):
// workerd, local R2 on disk in a temporary directory, local D1 with its migrations applied
// when wrangler.toml declares a database, a write token, an admin token and a signing key.
// Its entry is bench/worker-cpu/entry.ts: src/index.ts unchanged, plus V8's sampling
// profiler started inside the isolate through `node:inspector` (workerd's local-only
// `enable_nodejs_inspector_local_dev` flag), binding calls counted per request, and an
// endpoint that hands the profile over. Nothing is written into the working tree but what
// wrangler itself puts under .wrangler/ (git-ignored).
//
// How samples become CPU per request:
//   - requests go one at a time; the client notes each one's start and end on
//     process.hrtime (CLOCK_MONOTONIC, µs), the clock V8 stamps samples with on Linux. Every
//     profile is checked against it: its endTime must fall inside the client's window of the
//     request that stopped it (else the run aborts). workerd's own clocks cannot serve:
//     performance.now() and Date.now() there are coarse and stand still while code runs.
//   - V8 records a sample only while the isolate is entered, so between requests there are
//     none. A sample belongs to the latest request that started before it (a response body
//     still streaming, or work after the response, stays with its request).
//   - samples of JS, of "(program)" (native code inside the isolate: the runtime's side of
//     bindings and streams) and of "(garbage collector)" count as CPU; "(idle)" does not,
//     nor do samples whose own frame is the bench's wrapper or wrangler dev's middleware
//     (shown apart). Each sample counts for the sampling period achieved, the median gap
//     between two busy samples: on a loaded VM the sampler ticks later than asked.
// Cross-checks printed with the table:
//   - calibration: a loop (/__bench/spin) as the profile sees it, against the thread CPU the
//     same loop takes in this Node process (same machine, same moment) and the kernel's
//     figure for the workerd process;
//   - per request (from just before it to the end of its response) and in total, the
//     kernel's CPU time (/proc/<pid>/task/*/schedstat) of the Worker's workerd process, all
//     threads but the profiler's own. That figure also holds miniflare's entry worker, the
//     local R2/D1 simulation, the runtime's HTTP and stream work and the profiler's signals,
//     so it is an upper bound; wrangler's proxy (a second workerd) is shown apart.
//
// Request kinds (NARs and narinfos built with the core: serializeNar, formatNarInfo, sha256):
// /nix-cache-info; GET and HEAD of a narinfo; GET and PUT of 1 MiB and 32 MiB NARs; PUT of
// narinfos with 0, 100 and 900 references (the references pushed first, as real paths);
// POST /_api/v1/missing with 100 and 500 hashes, half present; a multipart upload's start,
// 8 MiB parts and completion; the first request of a fresh isolate (the Worker restarted),
// GET /nix-cache-info and a narinfo PUT; and every batch of a garbage collection over ~1000
// narinfos, the first batch of each of its steps as a cron tick in a fresh isolate.
//
// Usage: node bench/worker-cpu.ts [--reps 30] [--big-reps 5] [--fresh 3] [--interval-us 50]
//                                 [--top 10] [--keep] [--profiles <dir>] [--only <regex>]
//   --reps N           requests per kind (and paths per narinfo kind); default 30
//   --big-reps N       32 MiB NAR uploads and multipart uploads (16 MiB each); default 5
//   --fresh N          fresh isolates (Worker restarts) per first-request kind; default 3;
//                      0 also runs the whole collection in one isolate
//   --interval-us N    the profiler's sampling interval asked for; default 50
//   --top N            functions listed per heavy request kind; default 10
//   --keep             keep the temporary directory (R2 state) and say where it is
//   --profiles <dir>   write each phase's profile (open it in Chrome DevTools' Performance
//                      panel) with the client's and the isolate's request logs
//   --only <regex>     measure only the phases whose label matches (case-insensitive), e.g.
//                      "fresh" or "garbage"; the narinfo uploads (and their 1 MiB NARs)
//                      run anyway, unmeasured, so the collection sees the same graph
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes, randomFillSync } from "node:crypto";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { Agent, request } from "node:http";
import { SourceMap } from "node:module";
import { cpus, loadavg, release, tmpdir, totalmem } from "node:os";
import { basename, dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { unstable_DevEnv, unstable_readConfig } from "wrangler";
import { mapConcurrent } from "../src/concurrency.ts";
import { formatSha256, sha256 } from "../src/nix/hash.ts";
import { serializeNar } from "../src/nix/nar-writer.ts";
import { formatNarInfo, type NarInfo } from "../src/nix/narinfo.ts";
import { encodeNix32 } from "../src/nix/nix32.ts";
import { formatSecretKey, generateKeyPair } from "../src/nix/signature.ts";

const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const CONFIG = join(PROJECT_ROOT, "wrangler.toml");
const ENTRY = join(PROJECT_ROOT, "bench", "worker-cpu", "entry.ts");
/** The module name entry.ts imports the real Worker under (bench/worker-cpu/worker-under-test.d.ts). */
const WORKER_ALIAS = "nix-edge-cache-worker-under-test";
/** `node:inspector` needs nodejs_compat; the flag lets a Session reach the isolate's own V8. */
const BENCH_FLAGS = ["nodejs_compat", "enable_nodejs_inspector_local_dev"];
const REQUEST_HEADER = "x-bench-request";

/** The free plan's CPU per request, and this project's goal well inside it. */
const FREE_PLAN_CPU_MS = 10;
const GOAL_MEAN_MS = 5;
const GOAL_MAX_MS = 10;

const MiB = 1024 * 1024;
const SMALL_NAR_BYTES = 1 * MiB;
const BIG_NAR_BYTES = 32 * MiB;
/** Multipart: two parts of 8 MiB (R2's minimum part is 5 MiB). */
const PART_BYTES = 8 * MiB;
const MULTIPART_NAR_BYTES = 2 * PART_BYTES;
/** References of the biggest narinfo: the Worker's MAX_REFERENCES (ingest/references.ts). */
const MAX_REFS = 900;
const FEW_REFS = 100;
/** Contents of each reference path's NAR. */
const REF_CONTENT_BYTES = 200;
/** Parallel requests while filling the cache (not measured); the uploader's default. */
const SETUP_CONCURRENCY = 6;
/** Response bytes kept for checks (JSON answers); the rest of a big NAR is read but dropped. */
const KEEP_BODY_BYTES = 1 * MiB;
/** Pause between measured requests, so that no request's work runs into the next one's window. */
const GAP_MS = 3;
/** Calibration loop: iterations of `x = (x + sqrt(i)) % 1e9`, a few ms of CPU. */
const SPIN_ITERATIONS = 200_000;
/** GC settings for the run: NARs unreferenced at once, a short fence wait (uploads get half). */
const GC_VARS = { GC_NAR_GRACE_HOURS: "0", GC_UPLOAD_WINDOW_SECONDS: "4" };
/** How long the workerd process's idle CPU is sampled for. */
const IDLE_SAMPLE_MS = 2000;
/** How long wrangler may take to bundle and load the Worker. */
const LOAD_TIMEOUT_MS = 120_000;
/** Longest gap between two samples that still counts as the sampler's rhythm (µs). */
const MAX_BUSY_GAP_US = 1000;
/** Kernel thread of V8's profiler (its CPU is the measurement's, not the Worker's). */
const PROFILER_THREAD = "v8:ProfEvntProc";
const CLOCK_TICKS_PER_SECOND = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;

interface Options {
  reps: number;
  bigReps: number;
  fresh: number;
  intervalUs: number;
  top: number;
  keep: boolean;
  /** Where to write each phase's profile (Chrome DevTools .cpuprofile), or null. */
  profilesDir: string | null;
  /** Only the phases whose label this matches are measured (null: all). */
  only: RegExp | null;
}

const STARTED = Date.now();

/** Progress on stderr, with the seconds since the start. */
function log(message: string): void {
  process.stderr.write(`[${((Date.now() - STARTED) / 1000).toFixed(0).padStart(4)} s] ${message}\n`);
}

function nowUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo]! + (s[hi]! - s[lo]!) * (pos - lo);
}

function mean(xs: readonly number[]): number {
  return xs.length === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / xs.length;
}

function fmt(x: number, digits = 2): string {
  return Number.isFinite(x) ? x.toFixed(digits) : "–";
}

// --- HTTP ----------------------------------------------------------------------------------

/**
 * One connection per request in flight, kept open between requests. node:http rather than
 * fetch: fetch reads a 32 MiB body at a fraction of loopback speed, which made the GET
 * rounds the slowest part of the run.
 */
const agent = new Agent({ keepAlive: true, maxSockets: SETUP_CONCURRENCY });

interface HttpReply {
  status: number;
  /** The body, or its first `keep` bytes. */
  body: Buffer;
}

function httpRequest(url: string, method: string, headers: Record<string, string>, body?: Uint8Array | string, keep = Infinity): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const h = body === undefined ? headers : { ...headers, "content-length": String(typeof body === "string" ? Buffer.byteLength(body) : body.byteLength) };
    const req = request(url, { method, headers: h, agent }, (res) => {
      const chunks: Buffer[] = [];
      let kept = 0;
      res.on("data", (chunk: Buffer) => {
        if (kept >= keep) return;
        chunks.push(chunk);
        kept += chunk.length;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

// --- kernel CPU of workerd's threads ------------------------------------------------------

/** CPU time (ns) of every thread of `pid`, by "tid:name"; schedstat when the kernel has it. */
function threadTimes(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const close = stat.lastIndexOf(")");
      const name = stat.slice(stat.indexOf("(") + 1, close);
      let ns: number;
      try {
        ns = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
      } catch {
        const f = stat.slice(close + 2).split(" ");
        ns = ((Number(f[11]) + Number(f[12])) * 1e9) / CLOCK_TICKS_PER_SECOND; // utime + stime
      }
      out.set(`${tid}:${name}`, ns);
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

interface KernelSnapshot {
  worker: Map<string, number>;
  proxy: Map<string, number>;
}

interface KernelDelta {
  /** The Worker's workerd process, every thread but the profiler's (ms). */
  workerMs: number;
  /** The profiler's own thread (ms). */
  profilerMs: number;
  /** wrangler's proxy workerd (ms). */
  proxyMs: number;
}

function kernelDelta(a: KernelSnapshot, b: KernelSnapshot): KernelDelta {
  const d = { workerMs: 0, profilerMs: 0, proxyMs: 0 };
  for (const [key, ns] of b.worker) {
    const ms = (ns - (a.worker.get(key) ?? 0)) / 1e6;
    if (key.endsWith(`:${PROFILER_THREAD}`)) d.profilerMs += ms;
    else d.workerMs += ms;
  }
  for (const [key, ns] of b.proxy) d.proxyMs += (ns - (a.proxy.get(key) ?? 0)) / 1e6;
  return d;
}

/** Process ids of every descendant of this process. */
function descendants(pid: number): number[] {
  const out: number[] = [];
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    let children: number[] = [];
    try {
      children = readFileSync(`/proc/${pid}/task/${tid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
    } catch {
      continue;
    }
    for (const child of children) out.push(child, ...descendants(child));
  }
  return out;
}

/** Which of `pids` has a socket listening on TCP `port` (from /proc/net/tcp{,6} and fd links). */
function listeningPid(port: number, pids: readonly number[]): number | null {
  const inodes = new Set<string>();
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(table, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || f[3] !== "0A") continue; // 0A: LISTEN
      if (Number.parseInt(f[1]!.split(":")[1]!, 16) === port) inodes.add(f[9]!);
    }
  }
  for (const pid of pids) {
    let fds: string[] = [];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m && inodes.has(m[1]!)) return pid;
      } catch {
        // closed meanwhile
      }
    }
  }
  return null;
}

function commOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return "";
  }
}

// --- source locations of profile frames ---------------------------------------------------

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Maps bundle positions to the Worker's sources through the bundle's source map. */
class Locator {
  /** Source map by the module name frames carry (the bundle's file name, e.g. "entry.js"). */
  readonly #maps = new Map<string, { map: SourceMap; dir: string }>();

  /** Reads the map of a bundle wrangler built (before the Worker is disposed: it may go). */
  register(bundlePath: string, sourceMapPath: string | undefined): void {
    const file = sourceMapPath ?? `${bundlePath}.map`;
    try {
      this.#maps.set(basename(bundlePath), { map: new SourceMap(JSON.parse(readFileSync(file, "utf8"))), dir: dirname(file) });
    } catch {
      // no usable map: bundle positions are shown
    }
  }

  /**
   * A frame's label ("name  src/file.ts:line") and whether its own time is the measurement's
   * rather than the Worker's: the bench's wrapper (bench/worker-cpu/, but for the calibration
   * loop), the inspector calls that stop and start profiles, and wrangler dev's middleware,
   * none of which runs on Cloudflare.
   */
  frame(f: CallFrame): { label: string; harness: boolean } {
    const name = f.functionName || "(anonymous)";
    if (f.url === "") return { label: name.startsWith("(") ? name : `${name}  (runtime built-in)`, harness: false };
    if (f.url.startsWith("node-internal:internal_inspector")) return { label: `${name}  ${f.url}`, harness: true };
    const loaded = this.#maps.get(f.url);
    if (loaded) {
      const entry = loaded.map.findEntry(f.lineNumber, f.columnNumber);
      if ("originalSource" in entry && entry.originalSource) {
        const source = entry.originalSource.startsWith("file://") ? fileURLToPath(entry.originalSource) : resolve(loaded.dir, entry.originalSource);
        const nm = source.lastIndexOf("node_modules/");
        const shown = nm >= 0 ? source.slice(nm + "node_modules/".length) : relative(PROJECT_ROOT, source);
        const harness = (shown.startsWith("bench/worker-cpu/") && name !== "spin") || shown.startsWith("wrangler/templates/") || shown.startsWith("wrangler/");
        return { label: `${name}  ${shown}:${entry.originalLine + 1}`, harness };
      }
    }
    return { label: `${name}  ${f.url}:${f.lineNumber + 1}`, harness: false };
  }
}

// --- the Worker under the profiler --------------------------------------------------------

interface Secrets {
  writeToken: string;
  adminToken: string;
  signingKey: string;
}

interface IsolateRecord {
  id: string | null;
  status: number;
  calls: Record<string, number>;
}

/** The collection's request kinds (the batch table marks the first two). */
const GC_KIND = {
  freshStart: "first request of a fresh isolate: GC batch (the run's start)",
  freshTick: "first request of a fresh isolate: cron tick (GC batch)",
  afterTick: "GC batch (POST /_api/v1/gc), the isolate's first API request (after a cron tick)",
  warm: "GC batch (POST /_api/v1/gc)",
} as const;

/** Sends one measured request of `kind` (Bench.phase). */
type Send = (kind: string, method: string, path: string, opts?: RequestOptions) => Promise<Sent>;

interface ProfileReply {
  profile: CpuProfile | null;
  requests: IsolateRecord[];
  error: string | null;
}

type StartedWorker = Awaited<ReturnType<unstable_DevEnv["startWorker"]>>;

/** What wrangler's "reloadComplete" event carries, as far as the bench reads it. */
interface ReloadComplete {
  bundle: { path: string; sourceMapPath?: string };
  proxyData: { userWorkerUrl: { port: string } };
}

class BenchWorker {
  readonly url: string;
  readonly #worker: StartedWorker;
  /** The Worker's workerd process, and wrangler's proxy (another workerd). */
  readonly workerPid: number;
  readonly proxyPid: number | null;
  readonly locator: Locator;

  private constructor(url: string, worker: StartedWorker, workerPid: number, proxyPid: number | null, locator: Locator) {
    this.url = url;
    this.#worker = worker;
    this.workerPid = workerPid;
    this.proxyPid = proxyPid;
    this.locator = locator;
  }

  static async start(stateDir: string, secrets: Secrets, opts: Options, locator: Locator): Promise<BenchWorker> {
    const before = new Set(descendants(process.pid));
    const config = unstable_readConfig({ config: CONFIG }) as { compatibility_flags?: string[] };
    const plain = { UPSTREAM_CACHES: "", ...GC_VARS };
    // wrangler's DevEnv is what unstable_startWorker runs; used directly for its
    // "reloadComplete" event, which names the bundle (source map) and the Worker's own address.
    const env = new unstable_DevEnv();
    const reloaded = new Promise<ReloadComplete>((resolve) => env.once("reloadComplete", resolve));
    const worker = await env.startWorker({
      config: CONFIG,
      entrypoint: ENTRY,
      compatibilityFlags: [...new Set([...(config.compatibility_flags ?? []), ...BENCH_FLAGS])],
      build: {
        alias: { [WORKER_ALIAS]: join(PROJECT_ROOT, "src", "index.ts") },
        define: { __BENCH_SAMPLING_INTERVAL_US__: String(opts.intervalUs) },
      },
      bindings: {
        WRITE_TOKEN: { type: "secret_text", value: secrets.writeToken },
        ADMIN_TOKEN: { type: "secret_text", value: secrets.adminToken },
        SIGNING_KEY: { type: "secret_text", value: secrets.signingKey },
        ...Object.fromEntries(Object.entries(plain).map(([k, value]) => [k, { type: "plain_text" as const, value }])),
      },
      // A file that does not exist: the project's .dev.vars (a READ_TOKEN, …) stays out.
      envFiles: [join(stateDir, "no-such.env")],
      dev: { server: { hostname: "127.0.0.1", port: 0 }, inspector: false, persist: stateDir, watch: false },
    });
    await worker.ready;
    const url = String(await worker.url).replace(/\/$/, "");
    // `ready` means wrangler's proxy is up; the Worker itself is loaded at "reloadComplete".
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), LOAD_TIMEOUT_MS)));
    const loaded = await Promise.race([reloaded, timeout]);
    clearTimeout(timer);
    if (loaded === null) throw new Error(`the Worker did not load within ${LOAD_TIMEOUT_MS / 1000} s`);
    locator.register(resolve(loaded.bundle.path), loaded.bundle.sourceMapPath === undefined ? undefined : resolve(loaded.bundle.sourceMapPath));
    // Two workerd processes run: wrangler's proxy, and the Worker's, which listens on the
    // address the proxy forwards to. Found without a request, which would warm the isolate.
    const started = descendants(process.pid).filter((pid) => !before.has(pid) && commOf(pid) === "workerd");
    const workerPid = listeningPid(Number(loaded.proxyData.userWorkerUrl.port), started);
    if (workerPid === null) throw new Error(`none of the new workerd processes (${started.join(", ")}) listens on the Worker's port`);
    return new BenchWorker(url, worker, workerPid, started.find((p) => p !== workerPid) ?? null, locator);
  }

  kernel(): KernelSnapshot {
    return { worker: threadTimes(this.workerPid), proxy: this.proxyPid === null ? new Map() : threadTimes(this.proxyPid) };
  }

  /**
   * Stops the profiler, returns its profile (null when profiling does not work, with the
   * reason) and the isolate's request log, and starts a new profile.
   */
  async takeProfile(restart = true): Promise<ProfileReply & { window: [number, number] }> {
    const start = nowUs();
    const res = await httpRequest(`${this.url}/__bench/profile?restart=${restart ? 1 : 0}`, "GET", {});
    const reply = JSON.parse(res.body.toString("utf8")) as ProfileReply;
    const end = nowUs();
    const p = reply.profile;
    if (p !== null && !(p.endTime >= start && p.endTime <= end)) {
      throw new Error(
        `the profile's clock is not this process's CLOCK_MONOTONIC: it ended at ${p.endTime} µs, but was stopped by a request sent at ${start} and answered at ${end} µs`,
      );
    }
    return { ...reply, window: [start, end] };
  }

  dispose(): Promise<void> {
    return this.#worker.dispose();
  }
}

/** Applies the D1 migrations of every database wrangler.toml declares, into the bench's state. */
function applyD1Migrations(stateDir: string): string[] {
  const config = unstable_readConfig({ config: CONFIG }) as { d1_databases?: Array<{ binding: string }> };
  const applied: string[] = [];
  for (const db of config.d1_databases ?? []) {
    log(`applying the D1 migrations of ${db.binding} locally`);
    const r = spawnSync(
      process.execPath,
      [join(PROJECT_ROOT, "node_modules", "wrangler", "bin", "wrangler.js"), "d1", "migrations", "apply", db.binding, "--local", "--persist-to", stateDir, "--config", CONFIG],
      { cwd: PROJECT_ROOT, encoding: "utf8", env: { ...process.env, CI: "true" } },
    );
    if (r.status !== 0) throw new Error(`wrangler d1 migrations apply ${db.binding} failed:\n${r.stdout}\n${r.stderr}`);
    applied.push(db.binding);
  }
  return applied;
}

// --- store paths made with the core -------------------------------------------------------

interface BenchPath {
  hash: string;
  name: string;
  /** `<hash>-<name>`. */
  base: string;
  narFile: string;
  narSize: number;
  narHash: string;
}

function randomHashPart(): string {
  return encodeNix32(randomBytes(20));
}

/** A NAR of one regular file with `contentBytes` random bytes (the NAR adds ~100 bytes). */
async function makePath(name: string, contentBytes: number): Promise<{ path: BenchPath; nar: Uint8Array }> {
  const contents = new Uint8Array(contentBytes);
  randomFillSync(contents);
  const nar = await serializeNar({ type: "regular", contents });
  const digest = await sha256(nar);
  const hash = randomHashPart();
  const narHash = formatSha256(digest);
  return { path: { hash, name, base: `${hash}-${name}`, narFile: `${encodeNix32(digest)}.nar`, narSize: nar.length, narHash }, nar };
}

function narInfoOf(p: BenchPath, references: readonly BenchPath[]): string {
  const info: NarInfo = {
    storePath: `/nix/store/${p.base}`,
    url: `nar/${p.narFile}`,
    compression: "none",
    fileHash: p.narHash,
    fileSize: p.narSize,
    narHash: p.narHash,
    narSize: p.narSize,
    references: references.map((r) => r.base).sort(),
    sigs: [],
    extra: [],
  };
  return formatNarInfo(info);
}

// --- measured requests and their CPU ------------------------------------------------------

interface Sent {
  kind: string;
  id: number;
  start: number;
  end: number;
  status: number;
  body: Buffer;
  /** The kernel's CPU of workerd from just before the request to the end of its response. */
  kernel: KernelDelta;
}

interface Measured {
  kind: string;
  status: number;
  /** The Worker's profile samples (harness frames left out); null when profiling is unavailable. */
  samples: number | null;
  /** Of those, the ones taken after the client had the whole response. */
  tailSamples: number;
  /** Samples in the bench's wrapper and wrangler dev's middleware (not counted). */
  harnessSamples: number;
  kernel: KernelDelta;
  calls: Record<string, number>;
  /** Response body, parsed when JSON (GC batches report their phase). */
  json: unknown;
}

interface KindProfile {
  /** Self samples by frame label. */
  self: Map<string, number>;
  samples: number;
}

interface RequestOptions {
  body?: Uint8Array | string;
  auth?: "write" | "admin";
  expect?: number[];
}

class Bench {
  nextId = 1;
  readonly results: Measured[] = [];
  readonly kindProfiles = new Map<string, KindProfile>();
  /** Gaps between consecutive samples while the isolate was busy (µs): the sampling period achieved. */
  readonly gaps: number[] = [];
  /** Samples before the first request of a fresh isolate: module evaluation. */
  readonly startupSamples: number[] = [];
  profiling = true;
  profilerError = "";
  foreignRequests = 0;
  phases = 0;
  /** Thread CPU of the calibration loop in Node, per round (ms). */
  readonly nodeSpinMs: number[] = [];
  /** The Worker's workerd process's CPU per second while idle (ms/s). */
  idleWorkerMsPerS = NaN;
  worker: BenchWorker;
  readonly secrets: Secrets;
  readonly profilesDir: string | null;
  /** Only phases whose label matches are measured (null: all). */
  readonly only: RegExp | null;

  constructor(worker: BenchWorker, secrets: Secrets, profilesDir: string | null, only: RegExp | null) {
    this.only = only;
    this.worker = worker;
    this.secrets = secrets;
    this.profilesDir = profilesDir;
  }

  /** µs one sample stands for: the median gap between samples while the isolate was busy. */
  periodUs(): number {
    return quantile(this.gaps, 0.5);
  }

  /** A sample count as ms of CPU. */
  ms(samples: number): number {
    return (samples * this.periodUs()) / 1000;
  }

  /** One request of a kind, timed on the client's monotonic clock, the body read to its end. */
  async send(pending: Sent[], kind: string, method: string, path: string, opts: RequestOptions = {}): Promise<Sent> {
    const id = this.nextId++;
    const headers: Record<string, string> = { [REQUEST_HEADER]: String(id) };
    if (opts.auth === "write") headers.authorization = `Bearer ${this.secrets.writeToken}`;
    if (opts.auth === "admin") headers.authorization = `Bearer ${this.secrets.adminToken}`;
    const kernelBefore = this.worker.kernel();
    const start = nowUs();
    const res = await httpRequest(`${this.worker.url}${path}`, method, headers, opts.body, KEEP_BODY_BYTES);
    const body = res.body;
    const end = nowUs();
    const expect = opts.expect ?? [200, 201, 204];
    if (!expect.includes(res.status)) throw new Error(`${kind}: ${method} ${path} answered ${res.status} (expected ${expect.join("/")}): ${body.toString("utf8", 0, 500)}`);
    const sent = { kind, id, start, end, status: res.status, body, kernel: kernelDelta(kernelBefore, this.worker.kernel()) };
    pending.push(sent);
    await sleep(GAP_MS);
    return sent;
  }

  /**
   * Runs `fn`'s requests, then takes the profile and charges its samples to them. A phase
   * `--only` leaves out returns nothing, and runs unmeasured if later phases depend on it
   * (`fillsBucket`: its uploads, or the collection's progress).
   */
  async phase(
    label: string,
    fn: (send: Send) => Promise<void>,
    how: { freshIsolate?: boolean; fillsBucket?: boolean } = {},
  ): Promise<Measured[]> {
    if (this.only !== null && !this.only.test(label)) {
      // A phase later phases depend on (uploads making the collection's graph: young paths
      // keeping the reference paths alive; the collection's batches) still runs, unmeasured:
      // its samples are dropped.
      if (how.fillsBucket === true) {
        await fn((kind, method, path, opts) => this.send([], kind, method, path, opts));
        await this.worker.takeProfile();
      }
      return [];
    }
    log(`measuring: ${label}`);
    const pending: Sent[] = [];
    await fn((kind, method, path, opts) => this.send(pending, kind, method, path, opts));
    const reply = await this.worker.takeProfile();
    if (reply.profile === null && this.profiling) {
      this.profiling = false;
      this.profilerError = reply.error ?? "no profile returned";
      log(`V8 profiling unavailable (${this.profilerError}): reporting the kernel's CPU per request only`);
    }
    const measured = pending.map((s): Measured => {
      let json: unknown = null;
      try {
        json = JSON.parse(s.body.toString("utf8"));
      } catch {
        // not JSON
      }
      return { kind: s.kind, status: s.status, samples: null, tailSamples: 0, harnessSamples: 0, kernel: s.kernel, calls: {}, json };
    });
    const byId = new Map(reply.requests.map((r) => [r.id, r]));
    this.foreignRequests += reply.requests.filter((r) => r.id === null).length;
    pending.forEach((s, i) => {
      const record = byId.get(String(s.id));
      if (record === undefined) throw new Error(`the isolate did not log request ${s.id} (${s.kind})`);
      measured[i]!.calls = record.calls;
    });
    if (reply.profile !== null) {
      if (this.profilesDir !== null) {
        const file = join(this.profilesDir, `${String(++this.phases).padStart(2, "0")}-${label.replace(/[^A-Za-z0-9]+/g, "-").replace(/^-|-$/g, "")}.cpuprofile`);
        // Frames carry their source ("name  src/file.ts:line") for reading the file without the bundle's map.
        const located = { ...reply.profile, nodes: reply.profile.nodes.map((n) => ({ ...n, callFrame: { ...n.callFrame, functionName: this.worker.locator.frame(n.callFrame).label } })) };
        await writeFile(file, JSON.stringify(located));
        await writeFile(file.replace(/\.cpuprofile$/, ".requests.json"), JSON.stringify({ client: pending.map(({ body: _, ...s }) => s), isolate: reply.requests }, null, 1));
      }
      const before = this.charge(reply.profile, pending, measured, reply.window[0]);
      // In a fresh isolate the profile began with the modules: what precedes the first request
      // is their evaluation. (Elsewhere it is the end of the previous profile request.)
      if (how.freshIsolate === true) this.startupSamples.push(before);
    }
    this.results.push(...measured);
    return measured;
  }

  /**
   * Charges each non-idle sample to the latest request that started before it; returns the
   * number of samples before the first request.
   */
  private charge(profile: CpuProfile, pending: Sent[], measured: Measured[], stoppedAt: number): number {
    const nodes = new Map(profile.nodes.map((n) => [n.id, { ...n, ...this.worker.locator.frame(n.callFrame) }]));
    const idle = (id: number): boolean => ["(idle)", "(root)"].includes(nodes.get(id)!.callFrame.functionName);
    // Sample times; V8 may deliver a sample slightly out of order (a negative delta).
    const times: number[] = [];
    let t = profile.startTime;
    for (const d of profile.timeDeltas) times.push((t += d));
    // The sampling period: gaps between two busy samples. Longer gaps (over MAX_BUSY_GAP_US)
    // are the isolate waiting (no samples are taken then), not the sampler's rhythm.
    profile.samples.forEach((id, k) => {
      const d = profile.timeDeltas[k]!;
      if (k > 0 && d > 0 && d < MAX_BUSY_GAP_US && !idle(id) && !idle(profile.samples[k - 1]!)) this.gaps.push(d);
    });
    const counts = measured.map(() => ({ samples: 0, tail: 0, harness: 0 }));
    let before = 0;
    profile.samples.forEach((nodeId, k) => {
      const time = times[k]!;
      const node = nodes.get(nodeId)!;
      if (idle(nodeId) || time >= stoppedAt) return;
      let i = -1;
      for (let lo = 0, hi = pending.length - 1; lo <= hi; ) {
        const mid = (lo + hi) >> 1;
        if (pending[mid]!.start <= time) {
          i = mid;
          lo = mid + 1;
        } else hi = mid - 1;
      }
      if (i < 0) {
        if (!node.harness) before++;
        return;
      }
      const c = counts[i]!;
      if (node.harness) {
        c.harness++;
        return;
      }
      c.samples++;
      if (time > pending[i]!.end) c.tail++;
      const kind = pending[i]!.kind;
      let kp = this.kindProfiles.get(kind);
      if (kp === undefined) this.kindProfiles.set(kind, (kp = { self: new Map(), samples: 0 }));
      kp.self.set(node.label, (kp.self.get(node.label) ?? 0) + 1);
      kp.samples++;
    });
    counts.forEach((c, i) => {
      measured[i]!.samples = c.samples;
      measured[i]!.tailSamples = c.tail;
      measured[i]!.harnessSamples = c.harness;
    });
    return before;
  }
}

// --- the run ------------------------------------------------------------------------------

async function run(opts: Options): Promise<void> {
  process.env.WRANGLER_LOG ??= "warn";
  process.env.WRANGLER_SEND_METRICS ??= "false";
  process.env.CLOUDFLARE_CF_FETCH_ENABLED ??= "false";
  const loadStart = loadavg()[0]!;
  const wallStart = Date.now();
  const dir = await mkdtemp(join(tmpdir(), "nec-worker-cpu-"));
  const stateDir = join(dir, "state");
  const key = await generateKeyPair("bench-worker-cpu-1");
  const secrets: Secrets = {
    writeToken: randomBytes(24).toString("base64url"),
    adminToken: randomBytes(24).toString("base64url"),
    signingKey: formatSecretKey(key),
  };
  const d1 = applyD1Migrations(stateDir);
  const locator = new Locator();
  let worker = await BenchWorker.start(stateDir, secrets, opts, locator);
  if (opts.profilesDir !== null) await mkdir(opts.profilesDir, { recursive: true });
  const bench = new Bench(worker, secrets, opts.profilesDir, opts.only);
  try {
    // Fill the cache (not measured): 900 reference paths, the NARs of the paths whose
    // narinfos are measured later, and those of the fresh-isolate uploads.
    log(`filling the cache: ${MAX_REFS} reference paths (NAR + narinfo each)`);
    const refs = await mapConcurrent(Array.from({ length: MAX_REFS }, (_, i) => i), SETUP_CONCURRENCY, async (i) => {
      const { path, nar } = await makePath(`bench-ref-${i}`, REF_CONTENT_BYTES);
      await put(bench, `/nar/${path.narFile}`, nar);
      await put(bench, `/${path.hash}.narinfo`, narInfoOf(path, []));
      return path;
    });
    const smallNarPaths = async (label: string, count: number): Promise<BenchPath[]> =>
      mapConcurrent(Array.from({ length: count }, (_, i) => i), SETUP_CONCURRENCY, async (i) => {
        const { path, nar } = await makePath(`bench-${label}-${i}`, REF_CONTENT_BYTES);
        await put(bench, `/nar/${path.narFile}`, nar);
        return path;
      });
    const with100 = await smallNarPaths("refs100", opts.reps);
    const with900 = await smallNarPaths("refs900", opts.reps);
    const freshPaths = await smallNarPaths("fresh", opts.fresh);
    await worker.takeProfile(); // drop the setup's samples

    // The workerd process's CPU while nothing is asked of it (the profiler's signals, timers).
    const idleBefore = worker.kernel();
    await sleep(IDLE_SAMPLE_MS);
    bench.idleWorkerMsPerS = (kernelDelta(idleBefore, worker.kernel()).workerMs * 1000) / IDLE_SAMPLE_MS;
    for (let i = 0; i < 5; i++) nodeSpinMs(); // warm-up: the reference is the optimised loop
    await bench.phase("calibration", async (send) => {
      for (let i = 0; i < opts.reps; i++) {
        await send("calibration: empty request (/__bench/spin, 0 iterations)", "GET", "/__bench/spin?iterations=0");
        await send(`calibration: spin loop (${SPIN_ITERATIONS / 1000}k iterations)`, "GET", `/__bench/spin?iterations=${SPIN_ITERATIONS}`);
        bench.nodeSpinMs.push(nodeSpinMs());
      }
    });
    await bench.phase("GET /nix-cache-info", async (send) => {
      for (let i = 0; i < opts.reps; i++) await send("GET /nix-cache-info", "GET", "/nix-cache-info");
    });
    const small: BenchPath[] = [];
    await bench.phase("PUT NAR 1 MiB", async (send) => {
      for (let i = 0; i < opts.reps; i++) {
        const { path, nar } = await makePath(`bench-small-${i}`, SMALL_NAR_BYTES - 128);
        await send("PUT NAR 1 MiB", "PUT", `/nar/${path.narFile}`, { body: nar, auth: "write", expect: [201] });
        small.push(path);
      }
    }, { fillsBucket: true });
    const big: BenchPath[] = [];
    await bench.phase("PUT NAR 32 MiB", async (send) => {
      for (let i = 0; i < opts.bigReps; i++) {
        const { path, nar } = await makePath(`bench-big-${i}`, BIG_NAR_BYTES - 128);
        await send("PUT NAR 32 MiB", "PUT", `/nar/${path.narFile}`, { body: nar, auth: "write", expect: [201] });
        big.push(path);
      }
    });
    await bench.phase("PUT narinfo, 0 references", async (send) => {
      for (const p of small) await send("PUT narinfo, 0 references", "PUT", `/${p.hash}.narinfo`, { body: narInfoOf(p, []), auth: "write", expect: [201] });
    }, { fillsBucket: true });
    // Everything pushed so far is old for the collection at the end; the paths that follow
    // are young and keep the reference paths alive.
    await sleep(20);
    const gcCutoff = Date.now();
    await sleep(20);
    await bench.phase(`PUT narinfo, ${FEW_REFS} references`, async (send) => {
      for (const p of with100) {
        await send(`PUT narinfo, ${FEW_REFS} references`, "PUT", `/${p.hash}.narinfo`, { body: narInfoOf(p, refs.slice(0, FEW_REFS)), auth: "write", expect: [201] });
      }
    }, { fillsBucket: true });
    await bench.phase(`PUT narinfo, ${MAX_REFS} references`, async (send) => {
      for (const p of with900) {
        await send(`PUT narinfo, ${MAX_REFS} references`, "PUT", `/${p.hash}.narinfo`, { body: narInfoOf(p, refs), auth: "write", expect: [201] });
      }
    }, { fillsBucket: true });
    await bench.phase("GET narinfo", async (send) => {
      for (const p of small) await send("GET narinfo", "GET", `/${p.hash}.narinfo`, { expect: [200] });
    });
    await bench.phase("HEAD narinfo", async (send) => {
      for (const p of small) await send("HEAD narinfo", "HEAD", `/${p.hash}.narinfo`, { expect: [200] });
    });
    await bench.phase("GET NAR 1 MiB", async (send) => {
      for (const p of small) await send("GET NAR 1 MiB", "GET", `/nar/${p.narFile}`, { expect: [200] });
    });
    await bench.phase("GET NAR 32 MiB", async (send) => {
      for (let i = 0; i < opts.reps && big.length > 0; i++) await send("GET NAR 32 MiB", "GET", `/nar/${big[i % big.length]!.narFile}`, { expect: [200] });
    });
    for (const n of [100, 500]) {
      await bench.phase(`POST missing, ${n} hashes`, async (send) => {
        for (let i = 0; i < opts.reps; i++) {
          const present = refs.slice((i * 7) % (MAX_REFS - n / 2)).slice(0, n / 2).map((p) => p.hash);
          const absent = Array.from({ length: n / 2 }, randomHashPart);
          const hashes = present.flatMap((h, k) => [h, absent[k]!]);
          const sent = await send(`POST missing, ${n} hashes (half present)`, "POST", "/_api/v1/missing", { body: JSON.stringify({ hashes }), auth: "write", expect: [200] });
          const missing = (JSON.parse(sent.body.toString("utf8")) as { missing: string[] }).missing;
          if (missing.length !== n / 2) throw new Error(`missing answered ${missing.length} absent hashes, expected ${n / 2}`);
        }
      });
    }
    await bench.phase("multipart upload", async (send) => {
      for (let i = 0; i < opts.bigReps; i++) {
        const { path, nar } = await makePath(`bench-multipart-${i}`, MULTIPART_NAR_BYTES - 128);
        const base = `/_api/v1/multipart/nar/${path.narFile}`;
        const started = await send("multipart: start", "POST", base, { body: JSON.stringify({ size: nar.length, partSize: PART_BYTES }), auth: "write", expect: [201] });
        const { uploadId, partCount } = JSON.parse(started.body.toString("utf8")) as { uploadId: string; partCount: number };
        const q = `uploadId=${encodeURIComponent(uploadId)}`;
        for (let n = 1; n <= partCount; n++) {
          const part = nar.subarray((n - 1) * PART_BYTES, n * PART_BYTES);
          await send(`multipart: part PUT (${Math.round(part.length / MiB)} MiB)`, "PUT", `${base}/${n}?${q}`, { body: part, auth: "write", expect: [200] });
        }
        await send("multipart: complete (R2 verifies the sha256)", "POST", `${base}/complete?${q}`, { auth: "write", expect: [201] });
      }
    });
    // The first request of a fresh isolate: the Worker restarted (same bucket); the profiler
    // starts before the modules are evaluated, so nothing runs before this request but that.
    // Once a request that touches nothing (GET /nix-cache-info), once a narinfo upload.
    const restart = async (): Promise<void> => {
      await worker.dispose();
      worker = await BenchWorker.start(stateDir, secrets, opts, locator);
      bench.worker = worker;
    };
    let freshPushed = 0;
    for (const p of freshPaths) {
      await restart();
      await bench.phase("fresh isolate, GET /nix-cache-info", async (send) => {
        await send("first request of a fresh isolate: GET /nix-cache-info", "GET", "/nix-cache-info");
      }, { freshIsolate: true });
      await restart();
      await bench.phase("fresh isolate, PUT narinfo", async (send) => {
        await send("first request of a fresh isolate: PUT narinfo, 0 references", "PUT", `/${p.hash}.narinfo`, { body: narInfoOf(p, []), auth: "write", expect: [201] });
        freshPushed++;
      }, { freshIsolate: true });
    }
    const narinfoCount = MAX_REFS + small.length + with100.length + with900.length + freshPushed;
    // The collection, batch after batch through the admin API as `uploader gc` drives it; but
    // the first batch of each step goes to a fresh isolate as a cron tick, which is how a
    // fresh isolate meets the collection: a cron tick of an idle cache often gets one, and
    // the step's code then runs for the first time in it. (The run's first batch is an API
    // call in a fresh isolate: a tick cannot give the bench's cutoff.) A tick collects only
    // once the index is complete (src/scheduled.ts); the missing queries above complete it,
    // and with --only these do, unmeasured: each adopts a page until then (ADOPTION_PAGE in
    // src/path-index/adoption.ts, 100 narinfos; enough of them for pages down to 50).
    for (let i = 0; i < Math.ceil(narinfoCount / 50) + 5; i++) {
      const res = await httpRequest(`${bench.worker.url}/_api/v1/missing`, "POST", { authorization: `Bearer ${secrets.writeToken}` }, JSON.stringify({ hashes: ["0".repeat(32)] }));
      if (res.status !== 200) throw new Error(`setup: the missing query answered ${res.status}: ${res.body.toString("utf8", 0, 500)}`);
    }
    const gcBatches: { n: number; m: Measured }[] = [];
    let sentBatches = 0;
    const measuredBatches = (m: Measured[], from: number): void => m.forEach((b, i) => gcBatches.push({ n: from + i + 1, m: b }));
    let runId: string | undefined;
    let done = false;
    let step: string | null = null;
    let freshNext = opts.fresh > 0;
    let lastWasTick = false;
    const apiBatch = async (send: Send, kind: string): Promise<void> => {
      lastWasTick = false;
      const body = JSON.stringify(runId === undefined ? { before: gcCutoff } : { runId });
      const sent = await send(kind, "POST", "/_api/v1/gc", { body, auth: "admin", expect: [200] });
      sentBatches++;
      const progress = JSON.parse(sent.body.toString("utf8")) as { status: string; waitMs: number; run: { id: string; phase?: string; pass?: number } | null };
      runId ??= progress.run?.id;
      const next = progress.run === null ? null : `${progress.run.phase} ${progress.run.pass}`;
      freshNext = opts.fresh > 0 && next !== step;
      step = next;
      done = progress.status === "done" || progress.status === "idle";
      if (progress.status === "waiting") await sleep(progress.waitMs);
      if (progress.status === "busy") await sleep(200);
    };
    const cronTick = async (send: Send): Promise<void> => {
      // A minute that is neither a multipart cleanup's nor an adoption's: src/scheduled.ts's
      // MULTIPART_CLEANUP_EVERY_MINUTES (10) and ADOPTION_MINUTE (5), which this file cannot
      // import (they are typed against the Workers runtime).
      const at = new Date();
      at.setUTCMinutes(at.getUTCMinutes() - (at.getUTCMinutes() % 10) + 1);
      await send(GC_KIND.freshTick, "POST", `/__bench/scheduled?time=${at.getTime()}`, { expect: [204] });
      sentBatches++;
      freshNext = false;
      lastWasTick = true;
    };
    // A filtered-out phase still runs (fillsBucket), unmeasured: the next needs its progress.
    while (!done) {
      if (sentBatches > 500) throw new Error("the collection did not finish in 500 batches");
      const from = sentBatches;
      if (freshNext) {
        await restart();
        const first = runId === undefined;
        const measured = await bench.phase(
          "garbage collection, a step's first batch in a fresh isolate",
          (send) => (first ? apiBatch(send, GC_KIND.freshStart) : cronTick(send)),
          { freshIsolate: true, fillsBucket: true },
        );
        measuredBatches(measured, from);
      } else {
        // After a tick, the isolate's first API request runs the router and the token check
        // for the first time: a kind of its own, so that the warm kind stays warm.
        const m = await bench.phase("garbage collection", async (send) => {
          do {
            await apiBatch(send, lastWasTick ? GC_KIND.afterTick : GC_KIND.warm);
          } while (!done && !freshNext);
        }, { fillsBucket: true });
        measuredBatches(m, from);
      }
    }
    report(bench, opts, { gcBatches, sentBatches, narinfoCount, d1, loadStart, wallStart });
  } finally {
    log("stopping the Worker");
    agent.destroy();
    await worker.dispose().catch(() => {});
    if (opts.keep) log(`state kept in ${dir}`);
    else await rm(dir, { recursive: true, force: true });
    log("done");
  }
}

/** entry.ts's calibration loop, here in Node. */
function spin(iterations: number): number {
  let x = 0;
  for (let i = 0; i < iterations; i++) x = (x + Math.sqrt(i)) % 1e9;
  return x;
}

/** Thread CPU (ms) of one calibration loop in this process: what the profile should see of it. */
function nodeSpinMs(): number {
  const before = process.threadCpuUsage();
  spin(SPIN_ITERATIONS);
  const d = process.threadCpuUsage(before);
  return (d.user + d.system) / 1000;
}

/** A setup upload (not measured). */
async function put(bench: Bench, path: string, body: Uint8Array | string): Promise<void> {
  const res = await httpRequest(`${bench.worker.url}${path}`, "PUT", { authorization: `Bearer ${bench.secrets.writeToken}` }, body);
  if (res.status !== 201) throw new Error(`setup: PUT ${path} answered ${res.status}: ${res.body.toString("utf8", 0, 500)}`);
}

// --- the report ---------------------------------------------------------------------------

/** D1's row counts among a request's counts (bench/worker-cpu/entry.ts countRows), not calls. */
const ROWS = /\.rows(Read|Written)$/;

/** D1 rows read and written per request, e.g. "3 / 2" (D1's own meta; what the free plan counts). */
function rowsLabel(results: Measured[]): string {
  const total = (suffix: string): number => results.reduce((a, r) => a + Object.entries(r.calls).reduce((b, [k, v]) => b + (k.endsWith(suffix) ? v : 0), 0), 0);
  const per = (n: number): string => {
    const v = n / results.length;
    return Number.isInteger(v) ? String(v) : v.toFixed(1);
  };
  const read = total(".rowsRead");
  const written = total(".rowsWritten");
  return read === 0 && written === 0 && !results.some((r) => Object.keys(r.calls).some((k) => ROWS.test(k))) ? "–" : `${per(read)} / ${per(written)}`;
}

function callsLabel(results: Measured[]): string {
  const sum = new Map<string, number>();
  for (const r of results) for (const [k, v] of Object.entries(r.calls)) if (!ROWS.test(k)) sum.set(k, (sum.get(k) ?? 0) + v);
  if (sum.size === 0) return "–";
  return [...sum.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => {
      const per = v / results.length;
      return `${k.replace(/^CACHE\./, "")} ${Number.isInteger(per) ? per : per.toFixed(1)}`;
    })
    .join(", ");
}

function wranglerVersion(): string {
  try {
    return (JSON.parse(readFileSync(join(PROJECT_ROOT, "node_modules", "wrangler", "package.json"), "utf8")) as { version: string }).version;
  } catch {
    return "?";
  }
}

function workerdVersion(): string {
  const r = spawnSync(join(PROJECT_ROOT, "node_modules", "wrangler", "node_modules", "@cloudflare", "workerd-linux-64", "bin", "workerd"), ["--version"], { encoding: "utf8" });
  return (r.stdout || "").trim() || "?";
}

function report(
  bench: Bench,
  opts: Options,
  info: { gcBatches: { n: number; m: Measured }[]; sentBatches: number; narinfoCount: number; d1: string[]; loadStart: number; wallStart: number },
): void {
  const out: string[] = [];
  const profiled = bench.profiling;
  /** A request's CPU: from the profile, or (profiling unavailable) the kernel's figure. */
  const cpuOf = (r: Measured): number => (profiled ? bench.ms(r.samples!) : r.kernel.workerMs);
  out.push("```");
  out.push(`${cpus().length} × ${cpus()[0]?.model ?? "?"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${release()}`);
  out.push(`Node ${process.version}, wrangler ${wranglerVersion()}, ${workerdVersion()}; local R2${info.d1.length > 0 ? ` and D1 (${info.d1.join(", ")}, migrations applied)` : ""}`);
  if (profiled) {
    out.push(`V8 CPU profiler inside the isolate: asked for a sample every ${opts.intervalUs} µs, got one every ${fmt(bench.periodUs(), 0)} µs while busy (median gap)`);
  } else {
    out.push(`V8 profiling UNAVAILABLE (${bench.profilerError}): every CPU figure is the kernel's CPU time of the Worker's workerd process`);
  }
  out.push(`load average (1 min) at start ${fmt(info.loadStart)}, at end ${fmt(loadavg()[0]!)}; ${((Date.now() - info.wallStart) / 1000).toFixed(0)} s`);
  out.push("```");
  out.push("");

  const kinds: string[] = [];
  for (const r of bench.results) if (!kinds.includes(r.kind)) kinds.push(r.kind);
  const rows = kinds.map((kind) => {
    const rs = bench.results.filter((r) => r.kind === kind);
    const cpu = rs.map(cpuOf);
    return { kind, rs, n: rs.length, mean: mean(cpu), p50: quantile(cpu, 0.5), max: Math.max(...cpu), kernel: mean(rs.map((r) => r.kernel.workerMs)) };
  });
  out.push(
    profiled
      ? "| request kind | n | CPU mean (ms) | p50 | max | binding calls per request | D1 rows read / written | workerd process, kernel (ms, upper bound) |"
      : "| request kind | n | workerd process CPU, kernel: mean (ms) | p50 | max | binding calls per request | D1 rows read / written | |",
  );
  out.push("|---|--:|--:|--:|--:|---|--:|--:|");
  for (const r of rows) {
    out.push(`| ${r.kind} | ${r.n} | ${fmt(r.mean)} | ${fmt(r.p50)} | ${fmt(r.max)} | ${callsLabel(r.rs)} | ${rowsLabel(r.rs)} | ${profiled ? fmt(r.kernel, 1) : ""} |`);
  }
  out.push("");

  out.push(
    `Garbage collection of ${info.narinfoCount} narinfos, one row per POST /_api/v1/gc (paths pushed before the ${FEW_REFS}-reference uploads ` +
      "are old, those after young, keeping the reference paths alive):",
  );
  out.push("");
  out.push(`| batch | phase after it | status | CPU (ms) | binding calls | D1 rows read / written | workerd process, kernel (ms) |`);
  out.push("|--:|---|---|--:|---|--:|--:|");
  info.gcBatches.forEach(({ n, m: b }) => {
    const p = b.json as { status?: string; run?: { phase?: string; pass?: number } | null } | null;
    const phase = p?.run?.phase === undefined ? "–" : `${p.run.phase}${p.run.pass !== undefined ? ` (pass ${p.run.pass})` : ""}`;
    const fresh = b.kind === GC_KIND.freshTick ? " (fresh isolate, cron tick)" : b.kind === GC_KIND.freshStart ? " (fresh isolate)" : "";
    out.push(`| ${n}${fresh} | ${phase} | ${p?.status ?? "–"} | ${fmt(cpuOf(b))} | ${callsLabel([b])} | ${rowsLabel([b])} | ${fmt(b.kernel.workerMs, 1)} |`);
  });
  out.push("");
  const gcRows = (suffix: string): number => info.gcBatches.reduce((a, { m: b }) => a + Object.entries(b.calls).reduce((c, [k, v]) => c + (k.endsWith(suffix) ? v : 0), 0), 0);
  out.push(
    `The ${info.gcBatches.length === info.sentBatches ? "whole collection" : `${info.gcBatches.length} measured of the collection's batches`} read ${gcRows(".rowsRead")} D1 rows and wrote ${gcRows(".rowsWritten")}; it took ${info.sentBatches} batches.`,
  );
  out.push("");

  const all = bench.results;
  if (profiled) {
    const spinRow = rows.find((r) => r.kind.startsWith("calibration: spin"));
    const empty = rows.find((r) => r.kind.startsWith("calibration: empty"));
    if (spinRow && empty) {
      out.push(
        `calibration: the spin loop costs ${fmt(spinRow.mean - empty.mean)} ms more than an empty request according to the profile; ` +
          `the same loop takes ${fmt(quantile(bench.nodeSpinMs, 0.5))} ms of thread CPU in this Node process (median), and the workerd process ` +
          `${fmt(spinRow.kernel - empty.kernel)} ms more CPU according to the kernel. An empty request costs ${fmt(empty.mean)} ms in the isolate, ` +
          `${fmt(empty.kernel)} ms in the whole workerd process, which uses ${fmt(bench.idleWorkerMsPerS, 0)} ms per second while idle (the profiler's signals, timers)`,
      );
    }
    const profileTotal = all.reduce((a, r) => a + cpuOf(r), 0);
    const kernelTotal = all.reduce((a, r) => a + r.kernel.workerMs, 0);
    const profilerTotal = all.reduce((a, r) => a + r.kernel.profilerMs, 0);
    const proxyTotal = all.reduce((a, r) => a + r.kernel.proxyMs, 0);
    out.push(
      `total over ${all.length} measured requests: profile ${fmt(profileTotal, 0)} ms; kernel: the Worker's workerd process ${fmt(kernelTotal, 0)} ms ` +
        `(the isolate's share ${fmt((100 * profileTotal) / kernelTotal, 0)} %; the rest is miniflare's entry worker, the local R2/D1 simulation, ` +
        `the runtime's HTTP and stream work and the profiler's signals: an upper bound, not the Worker's CPU), ` +
        `its profiler thread ${fmt(profilerTotal, 0)} ms, wrangler's proxy (another workerd) ${fmt(proxyTotal, 0)} ms`,
    );
    const harness = all.reduce((a, r) => a + r.harnessSamples, 0);
    out.push(
      `not counted: ${fmt(bench.ms(harness) / all.length, 3)} ms per request in the bench's wrapper (binding counters, request log) and wrangler dev's middleware`,
    );
    const tail = all.reduce((a, r) => a + r.tailSamples, 0);
    const samples = all.reduce((a, r) => a + r.samples!, 0);
    if (tail > 0.02 * samples) out.push(`${fmt((100 * tail) / samples, 1)} % of the samples came after the client had the whole response (streaming, work after the response)`);
    if (bench.startupSamples.length > 0) {
      out.push(`fresh isolates: module evaluation (before the first request, not part of it) took ${bench.startupSamples.map((x) => fmt(bench.ms(x))).join(", ")} ms`);
    }
    if (bench.foreignRequests > 0) out.push(`note: ${bench.foreignRequests} requests not sent by the bench reached the isolate during measurements`);
  }
  out.push(`statuses: ${[...new Set(all.map((r) => r.status))].sort().join(", ")} (each as expected for its request)`);
  out.push("");

  const measuredRows = rows.filter((r) => !r.kind.startsWith("calibration"));
  const over = measuredRows.filter((r) => r.mean >= GOAL_MEAN_MS || r.max >= GOAL_MAX_MS);
  out.push(`goal: every kind < ${GOAL_MEAN_MS} ms mean and < ${GOAL_MAX_MS} ms max (free plan: ${FREE_PLAN_CPU_MS} ms per request)`);
  if (!profiled) out.push("(checked against the kernel's figures, which include the local R2/D1 simulation: an upper bound, far above the Worker's own CPU)");
  out.push(over.length === 0 ? "met by every kind" : `not met by: ${over.map((r) => `${r.kind} (mean ${fmt(r.mean)}, max ${fmt(r.max)})`).join("; ")}`);
  const over10 = measuredRows.filter((r) => r.max >= FREE_PLAN_CPU_MS);
  if (over10.length > 0) out.push(`over the free plan's ${FREE_PLAN_CPU_MS} ms at least once: ${over10.map((r) => r.kind).join("; ")}`);

  if (profiled) {
    // Where the CPU of the heavy kinds goes.
    const heavy = measuredRows.filter((r) => r.mean >= 2 || r.max >= GOAL_MEAN_MS);
    const shown = heavy.length > 0 ? heavy : [...measuredRows].sort((a, b) => b.mean - a.mean).slice(0, 3);
    for (const r of shown) {
      const kp = bench.kindProfiles.get(r.kind);
      if (!kp) continue;
      out.push("");
      out.push(`top ${opts.top} self time, ${r.kind} (${r.n} requests, ${fmt(r.mean)} ms each):`);
      out.push("");
      out.push("| ms per request | share | function  source |");
      out.push("|--:|--:|---|");
      const top = [...kp.self.entries()].sort((a, b) => b[1] - a[1]).slice(0, opts.top);
      for (const [label, count] of top) {
        out.push(`| ${fmt(bench.ms(count) / r.n, 3)} | ${fmt((100 * count) / kp.samples, 1)} % | ${label.replaceAll("|", "\\|")} |`);
      }
    }
  }
  console.log(out.join("\n"));
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      reps: { type: "string", default: "30" },
      "big-reps": { type: "string", default: "5" },
      fresh: { type: "string", default: "3" },
      "interval-us": { type: "string", default: "50" },
      top: { type: "string", default: "10" },
      keep: { type: "boolean", default: false },
      profiles: { type: "string" },
      only: { type: "string" },
    },
  });
  const opts: Options = {
    reps: Number(values.reps),
    bigReps: Number(values["big-reps"]),
    fresh: Number(values.fresh),
    intervalUs: Number(values["interval-us"]),
    top: Number(values.top),
    keep: values.keep,
    profilesDir: values.profiles === undefined ? null : resolve(values.profiles),
    only: values.only === undefined ? null : new RegExp(values.only, "i"),
  };
  for (const [k, v] of Object.entries(opts)) if (typeof v === "number" && !(Number.isInteger(v) && v > 0)) throw new Error(`--${k} must be a positive whole number`);
  await run(opts);
}

await main();
