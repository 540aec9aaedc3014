// Benchmark: CPU time of one garbage collection batch (src/gc/collector.ts) on a bucket of
// 20,000 narinfos, against the free plan's 10 ms of CPU per invocation.
//
// Workers stop their clocks during execution (time only moves across I/O), so CPU cannot be
// measured inside workerd; this runs the collector itself under Node (same V8) against an
// in-memory bucket that answers like R2 (sorted listings, 1000 objects a page, metadata,
// delimiters), and charges each batch the CPU it used outside that bucket. The R2 client's
// own work on Cloudflare (decoding listings into objects) is not included: it is why the
// collector's batch sizes stay far below what this measurement alone would allow.
//
// The D1 index is a real SQLite database (node:sqlite) with the project's migrations,
// behind the few methods of the D1 binding the collector uses (prepare/bind/all/run/first,
// batch); its time is taken off each batch like the bucket's, so what is measured is the
// collector's own work with the index's answers (one query per listed page, one per
// deleted chunk). Every path has its row; a tenth of the old ones were refreshed in the
// index only (young there), as a push that finds a path present leaves it.
//
// It is a .mjs file because it imports Worker code typed against the Workers runtime types,
// which the Node-side typecheck (uploader/tsconfig.json) does not have.
//
// Usage: node bench/gc-cpu.mjs [--paths N]
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { DatabaseSync } from "node:sqlite";
import { parseArgs } from "node:util";
import { runGcBatch } from "../src/gc/collector.ts";
import { formatNarInfo } from "../src/nix/narinfo.ts";
import { encodeNix32 } from "../src/nix/nix32.ts";
import { encodeNarInfoMeta } from "../src/storage/narinfo-meta.ts";
import { setPin } from "../src/storage/pins.ts";
import { recordPath, rowOf } from "../src/storage/path-index.ts";

const DAY = 24 * 3600 * 1000;
/** The free plan's CPU time per invocation, ms. */
const FREE_PLAN_CPU_MS = 10;

/** Wall time in ms; everything in a batch is synchronous computation here. */
function now() {
  return performance.now();
}

/** CPU time of this thread in ms (coarse on some kernels: used for totals only). */
function threadCpuMs() {
  const u = process.threadCpuUsage();
  return (u.user + u.system) / 1000;
}

/**
 * An in-memory stand-in for an R2 bucket that does as little work per call as it can:
 * objects are built once when written, listings are slices of a sorted array, so what a
 * batch costs is the collector's own work.
 */
class MemoryBucket {
  objects = new Map();
  keys = [];
  etag = 0;

  #index(key) {
    let lo = 0;
    let hi = this.keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.keys[mid] < key) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  async head(key) {
    return this.objects.get(key) ?? null;
  }

  async get(key) {
    return this.objects.get(key) ?? null;
  }

  async put(key, body, options = {}) {
    const old = this.objects.get(key);
    const cond = options.onlyIf;
    if (cond?.etagMatches !== undefined && old?.etag !== cond.etagMatches) return null;
    if (cond?.etagDoesNotMatch === "*" && old !== undefined) return null;
    const stored = typeof body === "string" ? body : body.slice(0);
    const object = {
      key,
      size: typeof stored === "string" ? stored.length : stored.byteLength,
      etag: String(++this.etag),
      uploaded: new Date(),
      customMetadata: options.customMetadata ?? {},
      text: async () => (typeof stored === "string" ? stored : new TextDecoder().decode(stored)),
      arrayBuffer: async () => (typeof stored === "string" ? new TextEncoder().encode(stored).buffer : stored.slice(0)),
    };
    if (old === undefined && this.keys[this.#index(key)] !== key) this.keys.splice(this.#index(key), 0, key);
    this.objects.set(key, object);
    return object;
  }

  async delete(keys) {
    // Deleted keys stay in the sorted array until listing skips them (cheap deletes).
    for (const key of Array.isArray(keys) ? keys : [keys]) this.objects.delete(key);
  }

  async list(options = {}) {
    const prefix = options.prefix ?? "";
    const limit = Math.min(options.limit ?? 1000, 1000);
    let i = options.cursor === undefined ? this.#index(prefix) : this.#index(options.cursor) + 1;
    const objects = [];
    const delimitedPrefixes = [];
    let last = null;
    while (i < this.keys.length && objects.length + delimitedPrefixes.length < limit) {
      const key = this.keys[i];
      if (!key.startsWith(prefix)) break;
      const slash = options.delimiter === undefined ? -1 : key.indexOf(options.delimiter, prefix.length);
      if (slash >= 0) {
        const p = key.slice(0, slash + 1);
        delimitedPrefixes.push(p);
        i = this.#index(p + "\uffff");
        last = this.keys[i - 1];
        continue;
      }
      const object = this.objects.get(key);
      if (object !== undefined) objects.push(object);
      last = key;
      i++;
    }
    const truncated = i < this.keys.length && this.keys[i].startsWith(prefix);
    return { objects, delimitedPrefixes, truncated, cursor: truncated ? last : undefined };
  }
}

/**
 * The D1 binding's interface over an in-memory SQLite database with the migrations applied.
 * D1 numbers its parameters like SQLite (?1, ?2…), so statements run unchanged.
 */
class SqliteD1 {
  /** Time spent in SQLite so far (ms): the benchmark takes it off each batch. */
  ms = 0;

  constructor() {
    this.sqlite = new DatabaseSync(":memory:");
    const dir = new URL("../migrations/", import.meta.url);
    for (const file of readdirSync(dir).filter((f) => f.endsWith(".sql")).sort()) this.sqlite.exec(readFileSync(new URL(file, dir), "utf8"));
  }

  prepare(sql) {
    const db = this;
    const statement = (params) => ({
      sql,
      params,
      bind: (...values) => statement(values),
      all: async () => db.#all(sql, params),
      first: async () => db.#all(sql, params).results[0] ?? null,
      run: async () => db.#run(sql, params),
      raw: async () => db.#all(sql, params).results.map((row) => Object.values(row)),
    });
    return statement([]);
  }

  async batch(statements) {
    return this.#timed(() => {
      this.sqlite.exec("BEGIN");
      try {
        // A statement that answers rows (a SELECT, or a write with RETURNING) answers them.
        const results = statements.map((s) => (/^\s*select|\breturning\b/i.test(s.sql) ? this.#all(s.sql, s.params) : this.#run(s.sql, s.params)));
        this.sqlite.exec("COMMIT");
        return results;
      } catch (err) {
        this.sqlite.exec("ROLLBACK");
        throw err;
      }
    });
  }

  #depth = 0;

  /** Runs `work`, counting its time once however deeply calls nest (batch → all). */
  #timed(work) {
    const t = now();
    this.#depth++;
    try {
      return work();
    } finally {
      if (--this.#depth === 0) this.ms += now() - t;
    }
  }

  #all(sql, params) {
    return this.#timed(() => ({ results: this.sqlite.prepare(sql).all(...params), success: true, meta: {} }));
  }

  #run(sql, params) {
    return this.#timed(() => {
      const r = this.sqlite.prepare(sql).run(...params);
      return { results: [], success: true, meta: { changes: Number(r.changes) } };
    });
  }
}

function hash32(text) {
  return encodeNix32(createHash("sha256").update(text).digest().subarray(0, 20));
}

/** Fills a bucket and its index with `count` narinfos (the graph of test/worker/gc-budget.test.ts). */
async function fill(count, clockNow) {
  const bucket = new MemoryBucket();
  const db = new SqliteD1();
  let seed = 20000;
  const next = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 0x100000000;
  };
  const hashes = [];
  const files = [];
  for (let i = 0; i < count; i++) {
    hashes.push(hash32(`p${i}`));
    files.push(encodeNix32(createHash("sha256").update(`n${i}`).digest()));
  }
  for (let i = 0; i < count; i++) {
    const refs = new Set();
    const n = i === 0 ? 0 : Math.floor(next() * 5);
    for (let k = 0; k < n; k++) refs.add(Math.max(0, i - 1 - Math.floor(next() * 200)));
    const info = {
      storePath: `/nix/store/${hashes[i]}-bench-${i}`,
      url: `nar/${files[i]}.nar.zst`,
      compression: "zstd",
      fileHash: `sha256:${files[i]}`,
      fileSize: 1000 + i,
      narHash: `sha256:${files[i]}`,
      narSize: 3000 + i,
      references: [...refs].map((j) => `${hashes[j]}-bench-${j}`).sort(),
      sigs: [],
      extra: [],
    };
    await bucket.put(`nar/${files[i]}.nar.zst`, new Uint8Array(16).buffer);
    const young = next() < 1 / 3;
    const pushed = clockNow - (young ? 1 : 60) * DAY;
    await bucket.put(`${hashes[i]}.narinfo`, formatNarInfo(info), { customMetadata: encodeNarInfoMeta(info, pushed) });
    const refreshed = !young && next() < 1 / 10;
    await recordPath(db, rowOf(info, null, refreshed ? clockNow - DAY : pushed), null, null);
  }
  await setPin(db, "a", { path: `/nix/store/${hashes[count - 1]}-bench-${count - 1}`, pinnedAt: clockNow }, 1000);
  return { bucket, db };
}

/** One whole collection; per batch: wall time, operations, entries, phase. */
async function collectOnce(count) {
  let clock = Date.now() + 3600 * 1000;
  const { bucket, db } = await fill(count, clock);
  const settings = { retentionMs: 30 * DAY, narGraceMs: 0, uploadWindowMs: 60_000, intervalMs: DAY };
  const rows = [];
  let runId;
  // The bucket's own time (the synchronous part of each call) is taken off each batch, and
  // so is the index's (SqliteD1 keeps its own).
  let bucketMs = 0;
  const timed = new Proxy(bucket, {
    get(target, prop) {
      const value = target[prop];
      if (typeof value !== "function") return value;
      return (...args) => {
        const t = now();
        try {
          return value.apply(target, args);
        } finally {
          bucketMs += now() - t;
        }
      };
    },
  });
  const cpuStart = threadCpuMs();
  for (;;) {
    const start = now();
    const bucketBefore = bucketMs + db.ms;
    const progress = await runGcBatch({ bucket: timed, db, settings, clock: () => clock }, { dryRun: false, trigger: "manual", ...(runId ? { runId } : {}) });
    const ms = now() - start - (bucketMs + db.ms - bucketBefore);
    rows.push({ ms, phase: progress.run?.phase ?? "-", ops: progress.batch.operations, entries: progress.batch.entries });
    runId ??= progress.run?.id;
    if (progress.status === "done") break;
    clock += Math.max(progress.waitMs, 1000);
  }
  // Thread CPU and the stand-ins' wall-clock times are different clocks: subtracting one
  // from the other went negative on a loaded machine. The whole collection's thread CPU is
  // shown as it is, stand-ins included: an upper bound on the collector's own.
  return { rows, cpu: threadCpuMs() - cpuStart };
}

async function main() {
  const { values } = parseArgs({ options: { paths: { type: "string", default: "20000" }, rounds: { type: "string", default: "3" } } });
  const count = Number(values.paths);
  const rounds = [];
  for (let r = 0; r < Number(values.rounds); r++) rounds.push(await collectOnce(count));
  // Batches are the same in every round (same graph, same limits); the fastest round of
  // each batch is its cost with the least interference from the rest of the machine.
  const batches = rounds[0].rows.map((row, i) => ({ ...row, ms: Math.min(...rounds.map((r) => r.rows[i]?.ms ?? Infinity)) }));
  const sorted = [...batches].sort((a, b) => a.ms - b.ms);
  const q = (f) => sorted[Math.min(sorted.length - 1, Math.floor(f * sorted.length))].ms.toFixed(2);
  const cpu = Math.min(...rounds.map((r) => r.cpu));
  console.log(
    `${count} narinfos: ${batches.length} batches; collector time per batch (best of ${rounds.length} rounds, R2 excluded): ` +
      `median ${q(0.5)} ms, 90th percentile ${q(0.9)} ms, max ${q(1)} ms; thread CPU of a whole collection ${cpu.toFixed(0)} ms ` +
      `(${(cpu / batches.length).toFixed(2)} ms per batch, the R2 and D1 stand-ins included); free plan: ${FREE_PLAN_CPU_MS} ms per invocation`,
  );
  console.log("costliest batches:");
  for (const r of sorted.slice(-5).reverse()) console.log(`  ${r.ms.toFixed(2).padStart(7)} ms  ${String(r.ops).padStart(4)} ops  ${String(r.entries).padStart(5)} entries  (ended in ${r.phase})`);
}

await main();
