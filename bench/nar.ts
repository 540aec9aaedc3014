// Benchmark: NAR serialisation + SHA-256, ours against Nix's C++ writer, on the same data
// in one run.
//
//   ours:   uploader/nar-writer.ts (dumpPath → core writeNar) → node:crypto sha256
//   theirs: nix-store --dump <dir> | sha256sum
//
// Both must produce the same hash (checked every run). Rounds alternate between the two
// tools so that machine noise hits both alike; the median of each is reported and the
// ratio printed. Absolute times on shared machines are noise; the ratio is the result.
//
// Usage: node bench/nar.ts [--rounds N] [dir ...]
// Default data sets: a tree of many small files (/usr/share/perl, /usr/lib/python3), a
// tree of large binaries (/usr/lib/gcc), and a generated 256 MiB file of mixed content.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { dumpPath } from "../uploader/nar-writer.ts";
import { median } from "./timing.ts";

/** Default rounds per tool and data set: enough for a stable median on 2 cores. */
const DEFAULT_ROUNDS = 5;
/** Size of the generated single-file data set. */
const BIG_FILE_BYTES = 256 * 1024 * 1024;

interface Result {
  hash: string;
  size: number;
  seconds: number;
}

async function ours(dir: string): Promise<Result> {
  const start = process.hrtime.bigint();
  const h = createHash("sha256");
  let size = 0;
  for await (const chunk of dumpPath(dir)) {
    h.update(chunk);
    size += chunk.length;
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return { hash: h.digest("hex"), size, seconds };
}

function theirs(dir: string): Promise<Result> {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    // The same shape as the reference: Nix's dumper piped into sha256sum. wc -c
    // counts the bytes through a tee so that both sizes can be compared too.
    const child = spawn("bash", ["-c", `nix-store --dump "$1" | tee >(wc -c >&2) | sha256sum`, "bash", dir], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("error", reject);
    child.on("exit", (code) => {
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      if (code !== 0) return reject(new Error(`nix-store --dump ${dir} failed: ${err}`));
      resolve({ hash: out.split(" ")[0]!, size: Number(err.trim().split("\n").pop()), seconds });
    });
  });
}

/** `nix-store --dump` alone into /dev/null: Nix's serialisation without any hashing. */
function dumpOnly(dir: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const child = spawn("nix-store", ["--dump", dir], { stdio: ["ignore", "ignore", "inherit"] });
    child.on("error", reject);
    child.on("exit", (code) =>
      code === 0 ? resolve(Number(process.hrtime.bigint() - start) / 1e9) : reject(new Error(`nix-store --dump ${dir} failed`)),
    );
  });
}

/** Writes a file of mixed content: runs of random bytes, text-like data and zeros. */
async function makeBigFile(path: string): Promise<void> {
  const fh = await open(path, "w");
  const block = 1 << 20;
  const buf = Buffer.alloc(block);
  let seed = 12345;
  for (let written = 0; written < BIG_FILE_BYTES; written += block) {
    const kind = (written / block) % 3;
    if (kind === 0) {
      for (let i = 0; i < block; i += 4) {
        seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
        buf.writeUInt32LE(seed, i);
      }
    } else if (kind === 1) {
      buf.fill(`line ${written} of a text-like region with repeated words\n`);
    } else {
      buf.fill(0);
    }
    await fh.write(buf, 0, block);
  }
  await fh.close();
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    options: { rounds: { type: "string" } },
    allowPositionals: true,
  });
  const rounds = values.rounds ? Number(values.rounds) : DEFAULT_ROUNDS;
  const work = await mkdtemp(join(tmpdir(), "nec-bench-nar-"));
  try {
    let sets = positionals;
    if (sets.length === 0) {
      const big = join(work, "big.bin");
      await makeBigFile(big);
      sets = ["/usr/share/perl", "/usr/lib/python3", "/usr/lib/gcc", big].filter((d) => existsSync(d));
    }
    console.log(`NAR serialisation + sha256: ours (Node ${process.version}) vs nix-store --dump | sha256sum`);
    console.log(`${rounds} alternating rounds per data set, medians; ratio > 1 means ours is faster\n`);
    const rows: string[][] = [["data set", "NAR size", "ours", "nix-store --dump | sha256sum", "ratio", "nix-store --dump alone (no hash)"]];
    const ratios: number[] = [];
    for (const dir of sets) {
      // One warm-up of each, so that both read from the page cache.
      const [a0, b0] = [await ours(dir), await theirs(dir)];
      if (a0.hash !== b0.hash || a0.size !== b0.size) {
        throw new Error(`NAR mismatch on ${dir}: ours ${a0.hash}/${a0.size}, nix ${b0.hash}/${b0.size}`);
      }
      const ourTimes: number[] = [];
      const theirTimes: number[] = [];
      const dumpTimes: number[] = [];
      for (let i = 0; i < rounds; i++) {
        ourTimes.push((await ours(dir)).seconds);
        theirTimes.push((await theirs(dir)).seconds);
        dumpTimes.push(await dumpOnly(dir));
      }
      const [o, t, d] = [median(ourTimes), median(theirTimes), median(dumpTimes)];
      ratios.push(t / o);
      rows.push([
        dir.startsWith(work) ? `generated ${BIG_FILE_BYTES >> 20} MiB file` : dir,
        `${(a0.size / 1048576).toFixed(1)} MiB`,
        `${o.toFixed(3)} s`,
        `${t.toFixed(3)} s`,
        `${(t / o).toFixed(2)}×`,
        `${d.toFixed(3)} s`,
      ]);
    }
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    for (const r of rows) console.log(r.map((c, i) => c.padEnd(widths[i]!)).join("  "));
    const geo = Math.exp(ratios.reduce((s, r) => s + Math.log(r), 0) / ratios.length);
    console.log(`\ngeometric mean ratio (nix time / our time): ${geo.toFixed(2)}×`);
    console.log("(the last column is Nix's serialisation alone, hashing nothing: a lower bound, not the reference)");
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

await main();
