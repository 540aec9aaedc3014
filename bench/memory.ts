// Benchmark: peak memory (RSS) of the uploader pushing a large path, measured from outside
// with /usr/bin/time -v ("Maximum resident set size"), so that a NAR of any size is seen
// to be streamed (NAR writer → hash → zstd → temp file → parts read back from the file)
// rather than held in memory.
//
// The path is one directory with a file of random (incompressible) bytes, added to the
// store for the run and deleted afterwards. Each mode pushes it to a fresh local Worker
// (workerd + local R2, wrangler's unstable_startWorker, as the uploader tests do):
//   baseline   `push --dry-run`: Node, the push machinery, nix path-info; nothing uploaded
//   multipart  the default request limit (100 MiB): 64 MiB parts, 4 in flight
//   single     the limit raised above the file's size: one streamed PUT
//
// Usage: node bench/memory.ts [--size-mib N]   (default 1024)
import { randomBytes } from "node:crypto";
import { mkdir, open } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { CLI, NixSandbox, run, runOk } from "../test/uploader/helpers.ts";
import { startWorker } from "../test/uploader/worker.ts";

const DEFAULT_SIZE_MIB = 1024;
/** Random data is written in blocks of this size. */
const WRITE_BLOCK = 8 << 20;

interface Row {
  mode: string;
  peakRssMiB: number;
  seconds: number;
  sentMiB: number;
  parts: number;
}

async function randomStorePath(nix: NixSandbox, bytes: number): Promise<string> {
  const dir = join(await nix.tempDir("bench-"), "nec-bench-memory");
  await mkdir(dir);
  const fh = await open(join(dir, "data.bin"), "w");
  for (let written = 0; written < bytes; written += WRITE_BLOCK) await fh.write(randomBytes(Math.min(WRITE_BLOCK, bytes - written)));
  await fh.close();
  return nix.add(dir);
}

/** Runs the uploader under /usr/bin/time -v against a fresh Worker; returns its peak RSS and summary. */
async function measure(nix: NixSandbox, path: string, mode: string, vars: Record<string, string>, extra: string[]): Promise<Row> {
  const worker = await startWorker(vars);
  try {
    const env = { ...nix.env, NIX_CACHE_URL: worker.url, NIX_CACHE_TOKEN: worker.token };
    const started = performance.now();
    const r = await run("/usr/bin/time", ["-v", process.execPath, CLI, "push", "--json", "--verbose", ...extra, path], { env });
    const seconds = (performance.now() - started) / 1000;
    if (r.code !== 0) throw new Error(`${mode}: push failed (${r.code}):\n${r.stderr}`);
    const rss = /Maximum resident set size \(kbytes\): (\d+)/.exec(r.stderr);
    if (!rss) throw new Error(`${mode}: no RSS in /usr/bin/time's output:\n${r.stderr}`);
    const summary = JSON.parse(r.stdout) as { sentBytes?: number };
    return {
      mode,
      peakRssMiB: Number(rss[1]) / 1024,
      seconds,
      sentMiB: (summary.sentBytes ?? 0) / 2 ** 20,
      parts: (r.stderr.match(/sent part /g) ?? []).length,
    };
  } finally {
    await worker.dispose();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { "size-mib": { type: "string" } } });
  const sizeMiB = values["size-mib"] ? Number(values["size-mib"]) : DEFAULT_SIZE_MIB;
  if (!Number.isInteger(sizeMiB) || sizeMiB < 1) throw new Error("--size-mib must be a positive whole number");
  const bytes = sizeMiB * 2 ** 20;
  const nix = await NixSandbox.create();
  let path: string | undefined;
  try {
    process.stderr.write(`adding a ${sizeMiB} MiB random path to the store…\n`);
    path = await randomStorePath(nix, bytes);
    const rows = [
      await measure(nix, path, "baseline (--dry-run)", {}, ["--dry-run"]),
      await measure(nix, path, "multipart (100 MiB limit)", {}, []),
      await measure(nix, path, "single PUT (limit raised)", { MAX_NAR_UPLOAD_BYTES: String(2 * bytes) }, []),
    ];
    const lines = [
      `uploader push of a ${sizeMiB} MiB incompressible path (zstd, -j 4), Node ${process.version}`,
      `${"mode".padEnd(28)} ${"peak RSS".padStart(10)} ${"time".padStart(8)} ${"sent".padStart(10)} ${"parts".padStart(6)}`,
      ...rows.map(
        (r) =>
          `${r.mode.padEnd(28)} ${`${r.peakRssMiB.toFixed(0)} MiB`.padStart(10)} ${`${r.seconds.toFixed(1)} s`.padStart(8)} ` +
          `${`${r.sentMiB.toFixed(0)} MiB`.padStart(10)} ${String(r.parts).padStart(6)}`,
      ),
    ];
    process.stdout.write(`${lines.join("\n")}\n`);
  } finally {
    if (path) await runOk("nix-store", ["--delete", path], { env: nix.env }).catch((err: unknown) => process.stderr.write(`could not delete ${path}: ${String(err)}\n`));
    await nix.cleanup();
  }
}

await main();
