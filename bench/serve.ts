// Benchmark: serving a cache, the Worker against nginx, on loopback, in one run.
//
// The same closure is put in both caches: pushed with the uploader to the Worker as
// `npm start` runs it (wrangler dev → workerd, local R2 on disk, a log line per request),
// and written as plain files by `nix copy --to file://…?compression=zstd` for nginx to
// serve (access log off). Then, for each server:
//
//   narinfo    wrk with a Lua script cycling through every narinfo of the closure, at a
//              few connection counts: requests per second and latency percentiles; and
//              /nix-cache-info, which the Worker answers without reading R2, to tell the
//              runtime's cost per request from the storage's
//   NAR        download of a ~100 MB NAR (96 MiB of random bytes: incompressible) with
//              curl, several rounds: MB/s
//   substitute `nix-store --store <empty dir> -r <top>` of the whole closure, with only
//              that server as substituter and its key trusted: seconds. Also in the two
//              read modes without the Worker (README "Reads without the Worker"), against
//              the local stand-in for the bucket's public domain (dev/public-bucket.ts,
//              reading the Worker's own local R2): a second Worker on the same bucket with
//              NAR_BASE_URL (narinfos from the Worker, NARs from the bucket), and the bucket
//              read directly; the NAR download is measured from the bucket too
//
// Each round starts with another server, and medians are compared; every ratio is
// Worker ÷ nginx. wrk, curl, nix and both servers share this machine's cores, so the
// numbers compare the two servers here, not a Cloudflare data centre.
//
// Needs nginx, wrk, curl and nix-bin: installed with apt-get when missing (root or sudo).
// Usage: node bench/serve.ts [--connections 1,64] [--duration 10] [--rounds 3] [--threads 2]
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, cp, lstat, mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { cpus, loadavg, release, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { parseNarInfo } from "../src/nix/narinfo.ts";
import { freePort, LocalCache, NixClient, PROJECT_ROOT, run, runOk } from "../test/e2e/harness.ts";
import { PublicBucket } from "../dev/public-bucket.ts";
import { Nginx } from "../test/e2e/import-servers.ts";
import { median, timed } from "./timing.ts";

/** Programs the benchmark runs, and the Debian package of each. */
const TOOLS: Record<string, string> = { nginx: "nginx", wrk: "wrk", curl: "curl", "nix-store": "nix-bin" };
const DEFAULT_CONNECTIONS = "1,64";
const DEFAULT_DURATION_S = 10;
const DEFAULT_ROUNDS = 3;
/** wrk threads: one per core of the 2-core machines this project runs on. */
const DEFAULT_THREADS = 2;
/**
 * wrk counts a request slower than this as a timeout (and leaves it out of the latency
 * figures). Its default, 2 s, is reached by a loaded local Worker at 64 connections.
 */
const WRK_TIMEOUT = "10s";
/**
 * The big path: 96 MiB of random bytes (100.7 MB). Its NAR stays under the Worker's default
 * MAX_NAR_UPLOAD_BYTES (100 MiB, the free plan's request body limit) after zstd, which
 * cannot shrink random data.
 */
const BIG_BYTES = 96 * 1024 * 1024;
/** Directories copied into the store, one path each: many small files, as real packages. */
const TREE_SOURCES = ["/usr/share/perl", "/usr/lib/python3"];
/** Small paths (package doc directories), so that substitution makes many requests. */
const SMALL_PATHS = 40;
const SMALL_SOURCE_ROOT = "/usr/share/doc";

interface Options {
  connections: number[];
  duration: number;
  rounds: number;
  threads: number;
}

function log(message: string): void {
  process.stderr.write(`${message}\n`);
}

function which(cmd: string): boolean {
  return (process.env.PATH ?? "").split(":").some((dir) => dir && existsSync(join(dir, cmd)));
}

/**
 * Installs the missing programs with apt-get. On a machine without a policy-rc.d, one is
 * put in place for the install and removed after: Debian's nginx package would otherwise
 * start a system nginx on port 80, which this benchmark neither needs nor should leave.
 */
async function ensureTools(): Promise<void> {
  const missing = Object.entries(TOOLS).filter(([cmd]) => !which(cmd)).map(([, pkg]) => pkg);
  if (missing.length === 0) return;
  log(`bench/serve.ts needs ${missing.join(", ")}: installing with apt-get (Debian/Ubuntu; needs root or sudo)`);
  const sudo = process.getuid?.() === 0 ? [] : ["sudo"];
  if (sudo.length > 0 && !which("sudo")) throw new Error(`not root and no sudo: install ${missing.join(" ")} with apt-get, then run again`);
  const policy = "/usr/sbin/policy-rc.d";
  const ownPolicy = !existsSync(policy);
  const asRoot = (args: string[]): Promise<string> =>
    runOk(sudo[0] ?? args[0]!, sudo.length > 0 ? args : args.slice(1), { env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } });
  try {
    if (ownPolicy) await asRoot(["sh", "-c", `printf '#!/bin/sh\\nexit 101\\n' > ${policy} && chmod 755 ${policy}`]);
    await asRoot(["apt-get", "update", "-q"]);
    await asRoot(["apt-get", "install", "-y", "-q", "--no-install-recommends", ...missing]);
  } finally {
    if (ownPolicy) await asRoot(["rm", "-f", policy]);
  }
}

/** A file of random bytes, written in blocks so memory stays small. */
async function randomFile(path: string, bytes: number): Promise<void> {
  const fh = await open(path, "w");
  const block = 1 << 20;
  for (let written = 0; written < bytes; written += block) await fh.write(randomBytes(Math.min(block, bytes - written)));
  await fh.close();
}

interface Closure {
  top: string;
  big: string;
  all: string[];
}

/** Store paths for this run (a salt makes them new) and a top path that references them all. */
async function buildClosure(nix: NixClient): Promise<Closure> {
  const salt = randomBytes(8).toString("hex");
  const env = await nix.env();
  const work = await mkdtemp(join(nix.dir, "data-"));
  const add = async (dir: string): Promise<string> => {
    await writeFile(join(dir, ".bench-salt"), salt);
    return (await runOk("nix-store", ["--add", dir], { env })).trim();
  };
  const bigDir = join(work, "big");
  await mkdir(bigDir);
  await randomFile(join(bigDir, "blob"), BIG_BYTES);
  const big = await add(bigDir);
  const parts = [big];
  for (const src of TREE_SOURCES) {
    const dir = join(work, src.replaceAll("/", "_").slice(1));
    await cp(src, dir, { recursive: true, verbatimSymlinks: true });
    parts.push(await add(dir));
  }
  // Real directories only: a doc entry that is a symlink would have the salt written through it.
  const docs: string[] = [];
  for (const name of (await readdir(SMALL_SOURCE_ROOT)).sort()) {
    if (docs.length === SMALL_PATHS) break;
    if ((await lstat(join(SMALL_SOURCE_ROOT, name))).isDirectory()) docs.push(name);
  }
  for (const name of docs) {
    const dir = join(work, `doc-${name}`);
    await cp(join(SMALL_SOURCE_ROOT, name), dir, { recursive: true, verbatimSymlinks: true });
    parts.push(await add(dir));
  }
  const expr = `builtins.derivation {
    name = "nec-bench-serve-top";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo ${salt} > $out; ${parts.map((p) => `echo \${builtins.storePath "${p}"} >> $out;`).join(" ")}" ];
  }`;
  await writeFile(join(work, "top.nix"), expr);
  const top = (await runOk("nix-build", [join(work, "top.nix"), "--no-out-link"], { env })).trim();
  const all = (await runOk("nix-store", ["-qR", top], { env })).trim().split("\n");
  return { top, big, all };
}

function hashPart(storePath: string): string {
  return storePath.slice("/nix/store/".length, "/nix/store/".length + 32);
}

interface WrkResult {
  requestsPerSecond: number;
  /** Milliseconds at 50, 75, 90, 99 %. */
  latency: Record<"p50" | "p75" | "p90" | "p99", number>;
  /** Answers other than 2xx/3xx: a wrong URL, so the run is void. */
  non2xx: number;
  /** Connect/read/write errors and requests slower than WRK_TIMEOUT (reported, not fatal). */
  socketErrors: number;
}

function toMs(value: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(value.trim());
  if (!m) throw new Error(`wrk latency "${value}"`);
  const n = Number(m[1]);
  return m[2] === "us" ? n / 1000 : m[2] === "ms" ? n : m[2] === "s" ? n * 1000 : n * 60_000;
}

/** wrk --latency's report: "Requests/sec:", the latency distribution, non-2xx and socket errors. */
export function parseWrk(out: string): WrkResult {
  const rps = /^Requests\/sec:\s+([\d.]+)/m.exec(out);
  if (!rps) throw new Error(`no Requests/sec in wrk's output:\n${out}`);
  const pct = (p: string): number => {
    const m = new RegExp(`^\\s+${p}%\\s+(\\S+)`, "m").exec(out);
    if (!m) throw new Error(`no ${p}% latency in wrk's output`);
    return toMs(m[1]!);
  };
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const socketErrors = socket ? socket.slice(1).reduce((n, x) => n + Number(x), 0) : 0;
  return {
    requestsPerSecond: Number(rps[1]),
    latency: { p50: pct("50"), p75: pct("75"), p90: pct("90"), p99: pct("99") },
    non2xx,
    socketErrors,
  };
}

/** wrk against `url`, with a request script or (null) the URL itself. */
async function wrk(url: string, script: string | null, connections: number, o: Options): Promise<WrkResult> {
  const threads = Math.min(o.threads, connections);
  const args = ["-t", String(threads), "-c", String(connections), "-d", `${o.duration}s`, "--timeout", WRK_TIMEOUT, "--latency", ...(script ? ["-s", script] : []), url];
  const out = await runOk("wrk", args);
  const result = parseWrk(out);
  if (result.non2xx > 0) throw new Error(`wrk got ${result.non2xx} answers other than 2xx/3xx from ${url}:\n${out}`);
  return result;
}

/** A wrk script that cycles through the given request paths. */
async function wrkScript(file: string, paths: readonly string[]): Promise<void> {
  const lua = `-- generated by bench/serve.ts: cycle through the closure's narinfos
local paths = { ${paths.map((p) => JSON.stringify(p)).join(", ")} }
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
`;
  await writeFile(file, lua);
}

/** Downloads a URL with curl to nowhere; bytes per second. */
async function download(url: string): Promise<{ bytes: number; seconds: number }> {
  const out = await runOk("curl", ["-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url]);
  const [bytes, seconds] = out.trim().split(" ").map(Number);
  return { bytes: bytes!, seconds: seconds! };
}

/** Makes a Nix store directory deletable (Nix leaves store paths read-only). */
async function removeStore(dir: string): Promise<void> {
  await run("chmod", ["-R", "u+w", dir]);
  await rm(dir, { recursive: true, force: true });
}

/** Through the Worker, the two read modes without it (README), and nginx on files. */
const MODES = ["Worker", "NAR_BASE_URL", "bucket", "nginx"] as const;
type Mode = (typeof MODES)[number];
const MODE_LABEL: Record<Mode, string> = {
  Worker: "through the Worker (2 Worker requests per path)",
  NAR_BASE_URL: "Worker + NAR_BASE_URL (1 per path)",
  bucket: "bucket read directly (0 per path)",
  nginx: "nginx",
};

interface Server {
  name: Mode;
  url: string;
  publicKey: string;
  narUrl: string;
}

async function narUrlOf(baseUrl: string, storePath: string): Promise<string> {
  const res = await fetch(`${baseUrl}/${hashPart(storePath)}.narinfo`);
  if (res.status !== 200) throw new Error(`${baseUrl}: narinfo of ${storePath}: HTTP ${res.status}`);
  return `${baseUrl}/${parseNarInfo(await res.text()).url}`;
}

async function machine(): Promise<string> {
  /** The first version number the program prints about itself. */
  const version = async (cmd: string, args: string[]): Promise<string> => {
    const r = await run(cmd, args);
    return `${cmd} ${/\d+\.\d+(\.\d+)?/.exec(`${r.stdout}${r.stderr}`)?.[0] ?? "?"}`;
  };
  const wranglerPkg = JSON.parse(await readFile(join(PROJECT_ROOT, "node_modules", "wrangler", "package.json"), "utf8")) as { version: string };
  return [
    `${cpus().length} × ${cpus()[0]?.model ?? "?"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${release()}`,
    `Node ${process.version}, wrangler ${wranglerPkg.version}, ${await version("nginx", ["-v"])}, ${await version("wrk", ["-v"])}, ${await version("nix-store", ["--version"])}, ${await version("curl", ["--version"])}`,
  ].join("\n");
}

const fmt = (n: number, digits = 1): string => n.toFixed(digits);
/** Three significant digits, whole numbers from 100 up: ratios and latencies span decades. */
const sig = (n: number): string => (Math.abs(n) >= 100 ? n.toFixed(0) : n.toPrecision(3));

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { connections: { type: "string" }, duration: { type: "string" }, rounds: { type: "string" }, threads: { type: "string" } },
  });
  const o: Options = {
    connections: (values.connections ?? DEFAULT_CONNECTIONS).split(",").map(Number),
    duration: Number(values.duration ?? DEFAULT_DURATION_S),
    rounds: Number(values.rounds ?? DEFAULT_ROUNDS),
    threads: Number(values.threads ?? DEFAULT_THREADS),
  };
  if (o.connections.some((c) => !Number.isInteger(c) || c < 1) || !(o.duration > 0) || !(o.rounds >= 1) || !(o.threads >= 1)) {
    throw new Error("usage: node bench/serve.ts [--connections 1,64] [--duration 10] [--rounds 3] [--threads 2]");
  }
  await ensureTools();
  // The machine may be shared: the report states how busy it was.
  const loadStart = loadavg()[0]!;

  const nix = await NixClient.create();
  const work = await mkdtemp(join(tmpdir(), "nec-bench-serve-"));
  await chmod(work, 0o755);
  let worker: LocalCache | undefined;
  let narBase: LocalCache | undefined;
  let bucket: PublicBucket | undefined;
  let nginx: Nginx | undefined;
  try {
    log("building the closure…");
    const closure = await buildClosure(nix);
    const env = await nix.env();
    const narBytes = Number((await runOk("nix-store", ["-q", "--size", ...closure.all], { env })).trim().split("\n").reduce((n, s) => n + Number(s), 0));
    log(`${closure.all.length} paths, ${fmt(narBytes / 1e6)} MB of NARs`);

    log("pushing it to the Worker with the uploader…");
    worker = await LocalCache.start();
    await runOk(process.execPath, [join(PROJECT_ROOT, "uploader", "cli.ts"), "push", "--cache", worker.url, closure.top], {
      env: { ...env, NIX_CACHE_TOKEN: worker.token },
    });

    log("starting the bucket's public-domain stand-in and a Worker with NAR_BASE_URL on the same bucket…");
    const bucketPort = await freePort();
    [narBase, bucket] = await Promise.all([
      LocalCache.start({ NAR_BASE_URL: `http://127.0.0.1:${bucketPort}` }, { sharing: worker }),
      PublicBucket.start(join(worker.stateDir, "r2"), bucketPort),
    ]);

    log("writing it as files with nix copy --to file://, for nginx…");
    const keyDir = join(work, "key");
    await mkdir(keyDir);
    const nginxKey = (
      await runOk(process.execPath, [join(PROJECT_ROOT, "uploader", "cli.ts"), "keygen", "--name", "nginx-bench-1", "--secret-key-file", join(keyDir, "sk")])
    ).trim();
    const files = join(work, "files");
    await runOk("nix", ["copy", "--to", `file://${files}?compression=zstd&secret-key=${join(keyDir, "sk")}`, closure.top], { env });
    nginx = await Nginx.start(files);

    const workerNar = await narUrlOf(worker.url, closure.big);
    const servers: Server[] = [
      { name: "Worker", url: worker.url, publicKey: worker.publicKey, narUrl: workerNar },
      { name: "nginx", url: nginx.url, publicKey: nginxKey, narUrl: await narUrlOf(nginx.url, closure.big) },
    ];
    // The read modes without the Worker: only substitution (and the bucket's NAR download).
    const readModes: Server[] = [
      { name: "NAR_BASE_URL", url: narBase.url, publicKey: worker.publicKey, narUrl: workerNar.replace(worker.url, bucket.url) },
      { name: "bucket", url: bucket.url, publicKey: worker.publicKey, narUrl: workerNar.replace(worker.url, bucket.url) },
    ];
    const script = join(work, "narinfos.lua");
    await wrkScript(script, closure.all.map((p) => `/${hashPart(p)}.narinfo`));

    // Warm-up: one pass over every narinfo and the big NAR on each server (the Worker's
    // first requests compile code and open the local R2 database).
    for (const s of [...servers, ...readModes]) {
      for (const p of closure.all) await (await fetch(`${s.url}/${hashPart(p)}.narinfo`)).arrayBuffer();
      await download(s.narUrl);
    }

    const narinfo = new Map<string, WrkResult>();
    const cacheInfo = new Map<string, WrkResult>();
    for (const c of o.connections) {
      for (const s of servers) {
        log(`narinfo: wrk, ${c} connection(s), ${o.duration} s, ${s.name}…`);
        narinfo.set(`${s.name}/${c}`, await wrk(s.url, script, c, o));
        // The same without a storage read (the Worker builds it from its settings): what
        // the runtime and its HTTP path cost per request, apart from R2.
        log(`nix-cache-info: wrk, ${c} connection(s), ${o.duration} s, ${s.name}…`);
        cacheInfo.set(`${s.name}/${c}`, await wrk(`${s.url}/nix-cache-info`, null, c, o));
      }
    }

    const throughput: Record<Mode, number[]> = { Worker: [], NAR_BASE_URL: [], bucket: [], nginx: [] };
    const substitute: Record<Mode, number[]> = { Worker: [], NAR_BASE_URL: [], bucket: [], nginx: [] };
    let narSize = 0;
    const all = [...servers, ...readModes];
    for (let round = 0; round < o.rounds; round++) {
      // Each round starts with another server, so no mode always follows the same one.
      const order = all.map((_, i) => all[(i + round) % all.length]!);
      for (const s of order) {
        log(`round ${round + 1}/${o.rounds}: NAR download and nix-store -r from ${s.name}…`);
        const d = await download(s.narUrl);
        narSize = d.bytes;
        throughput[s.name]!.push(d.bytes / d.seconds / 1e6);
        const store = await nix.emptyStore();
        try {
          const args = ["--store", store, "-r", closure.top, "--option", "substituters", s.url, "--option", "trusted-public-keys", s.publicKey];
          substitute[s.name]!.push(await timed(async () => runOk("nix-store", args, { env: await nix.env() })));
        } finally {
          await removeStore(store);
        }
      }
    }

    const date = new Date().toISOString().slice(0, 10);
    const rows: string[] = [];
    const row = (metric: string, w: number, n: number, better: string): void => {
      rows.push(`| ${metric} | ${sig(w)} | ${sig(n)} | ${sig(w / n)} | ${better} |`);
    };
    for (const c of o.connections) {
      const w = narinfo.get(`Worker/${c}`)!;
      const n = narinfo.get(`nginx/${c}`)!;
      row(`narinfo requests/s, ${c} conn.`, w.requestsPerSecond, n.requestsPerSecond, "higher");
      if (w.socketErrors + n.socketErrors > 0) rows.push(`| narinfo socket errors / timeouts, ${c} conn. | ${w.socketErrors} | ${n.socketErrors} | | lower |`);
      for (const p of ["p50", "p90", "p99"] as const) row(`narinfo latency ${p} (ms), ${c} conn.`, w.latency[p], n.latency[p], "lower");
      const wi = cacheInfo.get(`Worker/${c}`)!;
      const ni = cacheInfo.get(`nginx/${c}`)!;
      row(`nix-cache-info requests/s (no R2 read), ${c} conn.`, wi.requestsPerSecond, ni.requestsPerSecond, "higher");
      row(`nix-cache-info latency p50 (ms), ${c} conn.`, wi.latency.p50, ni.latency.p50, "lower");
    }
    row(`NAR download (MB/s), ${fmt(narSize / 1e6)} MB`, median(throughput.Worker!), median(throughput.nginx!), "higher");
    row(`nix-store -r of ${closure.all.length} paths, ${fmt(narBytes / 1e6)} MB NAR (s)`, median(substitute.Worker!), median(substitute.nginx!), "lower");
    const modeRows = MODES.map((m) => {
      const t = median(substitute[m]);
      const mbps = median(throughput[m]);
      return `| ${MODE_LABEL[m]} | ${sig(t)} | ${sig(t / median(substitute.nginx))} | ${substitute[m].map((x) => sig(x)).join(", ")} | ${m === "NAR_BASE_URL" ? "(the bucket's)" : sig(mbps)} |`;
    });
    const report = [
      `### ${date}`,
      "",
      "```",
      await machine(),
      `wrk: ${o.threads} threads, ${o.duration} s per run; medians of ${o.rounds} rounds for downloads and nix-store -r`,
      `load average (1 min) at start ${fmt(loadStart, 2)}, at end ${fmt(loadavg()[0]!, 2)}`,
      "```",
      "",
      "| Metric | Worker | nginx | Worker ÷ nginx | Better |",
      "|---|--:|--:|--:|---|",
      ...rows,
      "",
      `Read modes: nix-store -r of the ${closure.all.length} paths (${fmt(narBytes / 1e6)} MB of NARs), median seconds; the bucket is the local stand-in for its public domain (workerd on the same local R2)`,
      "",
      "| Mode | nix-store -r (s) | ÷ nginx | each round (s) | NAR download (MB/s) |",
      "|---|--:|--:|--:|--:|",
      ...modeRows,
      "",
    ].join("\n");
    process.stdout.write(`${report}\n`);
    const outDir = join(PROJECT_ROOT, "bench", "out");
    await mkdir(outDir, { recursive: true });
    await writeFile(join(outDir, `serve-${date}.md`), report);
    log(`(also written to bench/out/serve-${date}.md)`);
  } finally {
    await nginx?.stop();
    await bucket?.stop();
    await narBase?.stop();
    await worker?.stop();
    await removeStore(work);
    await nix.cleanup();
  }
}

if (import.meta.main) await main();
