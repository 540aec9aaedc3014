// Benchmark: what the verified completion of a multipart NAR upload costs. A file of random
// bytes (1 GiB by default) is uploaded in parts to a fresh local Worker (workerd + local
// R2, wrangler's unstable_startWorker, as the uploader tests and bench/memory.ts do): start,
// 64 MiB parts four at a time (as the uploader sends them), complete. Completion has R2
// assemble the parts, then copy them to nar/<file> through one put that R2 checks against
// the sha256 in the name (storage/multipart.ts).
//
// Printed per round and as medians:
//   R2 operations of the completion   from the code path, pinned by a test that counts the
//                                     binding's calls (test/worker/multipart-integrity.test.ts)
//   completion                        wall time of the complete request
//   whole upload                      wall time from the start request to the completion's answer
//   workerd CPU                       utime + stime of all threads of the workerd process
//                                     (/proc/<pid>/task/*/stat) before and after the complete
//                                     request. An upper bound of the Worker's CPU: local R2
//                                     (assembling, reading, hashing and writing the file) runs
//                                     in the same process, where on Cloudflare it is R2's work,
//                                     not the Worker's. Threads that end in between take their
//                                     time with them, so the process's own counters
//                                     (/proc/<pid>/stat, which keep ended threads' time) are
//                                     shown too; they are the figure to trust when the two differ.
//   idle workerd CPU                  the same counters over an equally long wait afterwards:
//                                     the background the measurement includes
//   single PUT, for reference         the same file as one PUT /nar/<file> (request limit
//                                     raised above it), which R2 also checks against the
//                                     sha256: wall time and workerd CPU of that request
//
// Usage: node bench/multipart-verify.ts [--size-mib N] [--rounds N]   (defaults 1024, 3)
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, open, readdir, readFile, rm } from "node:fs/promises";
import { cpus, loadavg, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { mapConcurrent } from "../src/concurrency.ts";
import { encodeNix32 } from "../src/nix/nix32.ts";
import { HttpClient } from "../uploader/http.ts";
import { MULTIPART_CONCURRENCY } from "../uploader/multipart.ts";
import { PROJECT_ROOT } from "../test/uploader/helpers.ts";
import { startWorker } from "../test/uploader/worker.ts";
import { median } from "./timing.ts";

const DEFAULT_SIZE_MIB = 1024;
const DEFAULT_ROUNDS = 3;
/** Random data is written in blocks of this size. */
const WRITE_BLOCK = 8 << 20;
/** What the completion asks of R2 (storage/multipart.ts finishUpload; the test pins the list). */
const COMPLETION_R2_OPERATIONS = ["head NAR", "complete", "get assembled", "put NAR (sha256, if absent)", "delete assembled"];

interface Round {
  completeMs: number;
  uploadMs: number;
  /** workerd CPU during the completion, summed over its threads. */
  cpuMs: number;
  /** The same from the process's own counters. */
  processCpuMs: number;
  idleCpuMs: number;
  parts: number;
  singlePutMs: number;
  singlePutCpuMs: number;
}

/** Writes `bytes` random bytes to `path`; returns their sha256. */
async function randomFile(path: string, bytes: number): Promise<Buffer> {
  const hash = createHash("sha256");
  const fh = await open(path, "w");
  for (let written = 0; written < bytes; written += WRITE_BLOCK) {
    const block = randomBytes(Math.min(WRITE_BLOCK, bytes - written));
    hash.update(block);
    await fh.write(block);
  }
  await fh.close();
  return hash.digest();
}

/** `/proc/<pid>/stat`'s ppid and comm, for every process. */
async function processTable(): Promise<Array<{ pid: number; ppid: number; comm: string }>> {
  const out: Array<{ pid: number; ppid: number; comm: string }> = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, "utf8");
      const close = stat.lastIndexOf(")");
      const fields = stat.slice(close + 2).split(" ");
      out.push({ pid: Number(entry), ppid: Number(fields[1]), comm: stat.slice(stat.indexOf("(") + 1, close) });
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}

/** The workerd processes descending from this one (the Worker wrangler started). */
async function workerdPids(): Promise<number[]> {
  const table = await processTable();
  const ours = new Set([process.pid]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const p of table) {
      if (ours.has(p.ppid) && !ours.has(p.pid)) {
        ours.add(p.pid);
        grew = true;
      }
    }
  }
  return table.filter((p) => ours.has(p.pid) && p.comm.startsWith("workerd")).map((p) => p.pid);
}

const CLOCK_TICKS_PER_SECOND = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());

/** utime + stime (fields 14 and 15 of stat(5)) of a stat file, in clock ticks. */
async function statTicks(path: string): Promise<number> {
  const stat = await readFile(path, "utf8");
  // fields[0] is field 3: the command name before it may contain spaces.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

/** CPU per workerd process descending from this one, in clock ticks: summed over its live threads, and its own total. */
type CpuSample = Map<number, { threads: number; process: number }>;

/**
 * Samples the CPU of the Worker's workerd processes, found afresh each time (wrangler may
 * start the runtime's process after the Worker reports ready).
 */
async function sampleCpu(): Promise<CpuSample> {
  const sample: CpuSample = new Map();
  for (const pid of await workerdPids()) {
    try {
      let threads = 0;
      for (const task of await readdir(`/proc/${pid}/task`)) {
        try {
          threads += await statTicks(`/proc/${pid}/task/${task}/stat`);
        } catch {
          // A thread that ended meanwhile.
        }
      }
      sample.set(pid, { threads, process: await statTicks(`/proc/${pid}/stat`) });
    } catch {
      // A process that ended meanwhile.
    }
  }
  if (sample.size === 0) throw new Error("no workerd process found among this process's descendants");
  return sample;
}

/** CPU in ms between two samples; a process that appeared in between counts whole, one that vanished is reported. */
function cpuBetween(before: CpuSample, after: CpuSample): { threads: number; process: number } {
  for (const pid of before.keys()) if (!after.has(pid)) process.stderr.write(`warning: workerd ${pid} ended during a measurement; its CPU is missing\n`);
  let threads = 0;
  let total = 0;
  for (const [pid, a] of after) {
    const b = before.get(pid) ?? { threads: 0, process: 0 };
    threads += a.threads - b.threads;
    total += a.process - b.process;
  }
  const ms = (ticks: number) => (ticks * 1000) / CLOCK_TICKS_PER_SECOND;
  return { threads: ms(threads), process: ms(total) };
}

/** Wall time and workerd CPU of one PUT /nar/<name> of the whole file, on a Worker whose limit allows it. */
async function singlePut(file: string, size: number, name: string): Promise<{ ms: number; cpuMs: number }> {
  const worker = await startWorker({ MAX_NAR_UPLOAD_BYTES: String(2 * size) });
  const http = new HttpClient({ baseUrl: worker.url, token: worker.token });
  try {
    // The runtime is surely up once it has answered.
    await http.request({ method: "GET", path: "nix-cache-info" });
    const cpuBefore = await sampleCpu();
    const began = performance.now();
    const res = await http.request({
      method: "PUT",
      path: `nar/${name}`,
      headers: { "content-type": "application/x-nix-nar" },
      body: { length: size, open: () => createReadStream(file, { highWaterMark: 1 << 20 }) },
    });
    const ms = performance.now() - began;
    if (res.status !== 201) throw new Error(`the single PUT answered ${res.status}`);
    return { ms, cpuMs: cpuBetween(cpuBefore, await sampleCpu()).process };
  } finally {
    http.close();
    await worker.dispose();
  }
}

async function round(file: string, size: number, name: string): Promise<Round> {
  const single = await singlePut(file, size, name);
  const worker = await startWorker();
  const http = new HttpClient({ baseUrl: worker.url, token: worker.token, maxSockets: MULTIPART_CONCURRENCY + 1 });
  try {
    await http.request({ method: "GET", path: "nix-cache-info" });
    const base = `_api/v1/multipart/nar/${name}`;
    const began = performance.now();
    const startBody = Buffer.from(JSON.stringify({ size }));
    const started = JSON.parse(
      (await http.request({ method: "POST", path: base, headers: { "content-type": "application/json" }, body: { length: startBody.length, open: () => startBody } })).body.toString(),
    ) as { uploadId: string; partSize: number; partCount: number };
    const id = encodeURIComponent(started.uploadId);
    const numbers = Array.from({ length: started.partCount }, (_, i) => i + 1);
    await mapConcurrent(numbers, MULTIPART_CONCURRENCY, async (n) => {
      const offset = (n - 1) * started.partSize;
      const length = Math.min(started.partSize, size - offset);
      await http.request({
        method: "PUT",
        path: `${base}/${n}?uploadId=${id}`,
        headers: { "content-type": "application/octet-stream" },
        body: { length, open: () => createReadStream(file, { start: offset, end: offset + length - 1, highWaterMark: 1 << 20 }) },
      });
    });
    // One attempt, without the uploader's 2-minute idle timeout (local R2 may take longer
    // for a large NAR; a retried completion would only find the NAR stored).
    const cpuBefore = await sampleCpu();
    const completing = performance.now();
    const done = await fetch(`${worker.url}/${base}/complete?uploadId=${id}`, { method: "POST", headers: { Authorization: `Bearer ${worker.token}` } });
    const answer = await done.text();
    const completeMs = performance.now() - completing;
    const cpu = cpuBetween(cpuBefore, await sampleCpu());
    const uploadMs = performance.now() - began;
    if (done.status !== 201) throw new Error(`completion answered ${done.status}: ${answer}`);
    const head = await http.request({ method: "HEAD", path: `nar/${name}` });
    if (head.status !== 200 || Number(head.headers["content-length"]) !== size) throw new Error(`the stored NAR is not there with ${size} bytes`);
    // The background over as long a wait, for comparison.
    const idleBefore = await sampleCpu();
    await new Promise((r) => setTimeout(r, completeMs));
    const idleCpuMs = cpuBetween(idleBefore, await sampleCpu()).process;
    return {
      completeMs,
      uploadMs,
      cpuMs: cpu.threads,
      processCpuMs: cpu.process,
      idleCpuMs, parts: started.partCount, singlePutMs: single.ms, singlePutCpuMs: single.cpuMs };
  } finally {
    http.close();
    await worker.dispose();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { "size-mib": { type: "string" }, rounds: { type: "string" } } });
  const sizeMiB = values["size-mib"] ? Number(values["size-mib"]) : DEFAULT_SIZE_MIB;
  const rounds = values.rounds ? Number(values.rounds) : DEFAULT_ROUNDS;
  if (!Number.isInteger(sizeMiB) || sizeMiB < 6) throw new Error("--size-mib must be a whole number of at least 6 (more than one part)");
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error("--rounds must be a positive whole number");
  const size = sizeMiB * 2 ** 20;
  const loadAtStart = loadavg()[0]!;
  const dir = await mkdtemp(join(tmpdir(), "bench-multipart-"));
  try {
    const file = join(dir, "nar.zst");
    process.stderr.write(`writing ${sizeMiB} MiB of random bytes…\n`);
    const name = `${encodeNix32(new Uint8Array(await randomFile(file, size)))}.nar.zst`;
    const results: Round[] = [];
    for (let i = 1; i <= rounds; i++) {
      const r = await round(file, size, name);
      process.stderr.write(
        `round ${i}: completion ${(r.completeMs / 1000).toFixed(2)} s, upload ${(r.uploadMs / 1000).toFixed(2)} s, ` +
          `workerd CPU ${r.cpuMs.toFixed(0)} ms (process ${r.processCpuMs.toFixed(0)} ms, idle ${r.idleCpuMs.toFixed(0)} ms); single PUT ${(r.singlePutMs / 1000).toFixed(2)} s, ${r.singlePutCpuMs.toFixed(0)} ms CPU\n`,
      );
      results.push(r);
    }
    const wrangler = JSON.parse(await readFile(join(PROJECT_ROOT, "node_modules", "wrangler", "package.json"), "utf8")) as { version: string };
    const col = (label: string, f: (r: Round) => string) => `| ${label} | ${results.map(f).join(" | ")} |`;
    const lines = [
      `${cpus().length} × ${cpus()[0]?.model ?? "?"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB; Node ${process.version}, wrangler ${wrangler.version}; clock tick ${1000 / CLOCK_TICKS_PER_SECOND} ms`,
      `load average (1 min) at start ${loadAtStart.toFixed(2)}, at end ${loadavg()[0]!.toFixed(2)}`,
      `a ${sizeMiB} MiB NAR in ${results[0]!.parts} parts of 64 MiB, ${MULTIPART_CONCURRENCY} in flight, ${rounds} rounds (fresh Worker each)`,
      `R2 operations of the completion: ${COMPLETION_R2_OPERATIONS.length} (${COMPLETION_R2_OPERATIONS.join(", ")})`,
      "",
      `| | ${results.map((_, i) => `round ${i + 1}`).join(" | ")} | median |`,
      `|---|${results.map(() => "--:|").join("")}--:|`,
      `${col("completion, wall", (r) => `${(r.completeMs / 1000).toFixed(2)} s`)} ${(median(results.map((r) => r.completeMs)) / 1000).toFixed(2)} s |`,
      `${col("whole upload, wall", (r) => `${(r.uploadMs / 1000).toFixed(2)} s`)} ${(median(results.map((r) => r.uploadMs)) / 1000).toFixed(2)} s |`,
      `${col("workerd CPU during completion (upper bound)", (r) => `${r.cpuMs.toFixed(0)} ms`)} ${median(results.map((r) => r.cpuMs)).toFixed(0)} ms |`,
      `${col("the same, process counters", (r) => `${r.processCpuMs.toFixed(0)} ms`)} ${median(results.map((r) => r.processCpuMs)).toFixed(0)} ms |`,
      `${col("workerd CPU idle, as long", (r) => `${r.idleCpuMs.toFixed(0)} ms`)} ${median(results.map((r) => r.idleCpuMs)).toFixed(0)} ms |`,
      `${col("reference: one verified PUT of the file, wall", (r) => `${(r.singlePutMs / 1000).toFixed(2)} s`)} ${(median(results.map((r) => r.singlePutMs)) / 1000).toFixed(2)} s |`,
      `${col("reference: one verified PUT, workerd CPU", (r) => `${r.singlePutCpuMs.toFixed(0)} ms`)} ${median(results.map((r) => r.singlePutCpuMs)).toFixed(0)} ms |`,
    ];
    process.stdout.write(`${lines.join("\n")}\n`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
