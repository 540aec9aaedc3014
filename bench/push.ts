// Benchmark: a whole push, `uploader push` against `nix copy --to 'http://…?compression=zstd'`,
// of the same store paths to the same Worker (as `npm start` runs it), in one run.
//
// Each round starts a fresh local cache (empty R2) for each tool, so both upload
// everything; cache start-up is not timed. Rounds alternate between the tools and the
// medians are compared. The data: copies of a few system directories (many small files,
// large binaries) and a generated file, added to the Nix store as separate paths.
//
// With --rtt-ms N both tools reach the Worker through bench/latency-proxy.ts, which delays
// every byte by N/2 ms each way: the round trips of a real network (e.g. 30 ms from a CI
// runner to the nearest Cloudflare data centre), which loopback does not have.
//
// The uploader run is the compiled JavaScript an installed uploader runs (push-compiled.ts);
// --from-source runs the TypeScript sources instead, as `npm run uploader` does in a clone.
//
// Usage: node bench/push.ts [--rounds N] [--jobs N] [--rtt-ms N] [--from-source]
import { randomBytes } from "node:crypto";
import { cp, lstat, mkdir, open, readdir, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { join, relative } from "node:path";
import { parseArgs } from "node:util";
import { LocalCache, NixClient, PROJECT_ROOT, runOk } from "../test/e2e/harness.ts";
import { LatencyProxy } from "./latency-proxy.ts";
import { median, timed } from "./timing.ts";
import { uploaderScript } from "./push-compiled.ts";

const DEFAULT_ROUNDS = 3;
/** A generated file with incompressible and compressible regions. */
const GENERATED_BYTES = 96 * 1024 * 1024;
const SOURCES = ["/usr/share/perl", "/usr/lib/python3", "/usr/lib/gcc"];
/** Real closures hold many small paths too: this many package doc directories, one path each. */
const SMALL_PATHS = 60;
const SMALL_SOURCE_ROOT = "/usr/share/doc";

async function generated(path: string, salt: string): Promise<void> {
  const fh = await open(path, "w");
  const block = 1 << 20;
  for (let written = 0; written < GENERATED_BYTES; written += block) {
    const buf = (written / block) % 2 === 0 ? randomBytes(block) : Buffer.alloc(block, `${salt} text region ${written}\n`);
    await fh.write(buf);
  }
  await fh.close();
}

/**
 * A fresh local cache, reached directly or, with `rttMs` > 0, through a proxy that delays
 * every byte by half that each way (the network between a CI runner and the edge).
 */
async function withCache<T>(rttMs: number, use: (url: string, cache: LocalCache) => Promise<T>): Promise<T> {
  const cache = await LocalCache.start();
  const proxy = rttMs > 0 ? await LatencyProxy.start(Number(new URL(cache.url).port), rttMs / 2) : null;
  try {
    return await use(proxy ? `http://127.0.0.1:${proxy.port}` : cache.url, cache);
  } finally {
    await proxy?.stop();
    await cache.stop();
  }
}

/** Seconds for `uploader push` of `paths` to a fresh local cache (start-up not timed). */
function pushWithUploader(script: string, paths: readonly string[], env: NodeJS.ProcessEnv, jobs: string | undefined, rttMs: number): Promise<number> {
  return withCache(rttMs, (url, cache) => {
    const args = [script, "push", "--cache", url, ...(jobs ? ["--jobs", jobs] : []), ...paths];
    return timed(() => runOk(process.execPath, args, { env: { ...env, NIX_CACHE_TOKEN: cache.token } }));
  });
}

/** Seconds for `nix copy --to` of `paths` to a fresh local cache (start-up not timed). */
function pushWithNixCopy(paths: readonly string[], nix: NixClient, rttMs: number): Promise<number> {
  return withCache(rttMs, async (url, cache) => {
    const netrc = await nix.netrc(cache.token);
    const env = await nix.env();
    const args = ["copy", "--to", `${url}?compression=zstd`, "--option", "netrc-file", netrc, ...paths];
    return timed(() => runOk("nix", args, { env }));
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rounds: { type: "string" }, jobs: { type: "string" }, "rtt-ms": { type: "string" }, "from-source": { type: "boolean" } } });
  const script = await uploaderScript(values["from-source"] ?? false);
  const rttMs = values["rtt-ms"] ? Number(values["rtt-ms"]) : 0;
  const rounds = values.rounds ? Number(values.rounds) : DEFAULT_ROUNDS;
  const nix = await NixClient.create();
  try {
    // Fresh store paths for this run: a salt file in each copy changes every hash.
    const salt = randomBytes(8).toString("hex");
    const env = await nix.env();
    const addCopy = async (src: string): Promise<string> => {
      const dir = join(nix.dir, `data-${src.replaceAll("/", "_")}`);
      await cp(src, dir, { recursive: true, verbatimSymlinks: true });
      await writeFile(join(dir, ".bench-salt"), salt);
      return (await runOk("nix-store", ["--add", dir], { env })).trim();
    };
    const smallSources: string[] = [];
    for (const name of (await readdir(SMALL_SOURCE_ROOT)).sort()) {
      const dir = join(SMALL_SOURCE_ROOT, name);
      if (smallSources.length < SMALL_PATHS && (await lstat(dir)).isDirectory()) smallSources.push(dir);
    }
    const small: string[] = [];
    for (const src of smallSources) small.push(await addCopy(src));
    const large: string[] = [];
    for (const src of SOURCES.filter((s) => existsSync(s))) large.push(await addCopy(src));
    const gen = join(nix.dir, "generated");
    await mkdir(gen);
    await generated(join(gen, "data.bin"), salt);
    large.push((await runOk("nix-store", ["--add", gen], { env })).trim());

    console.log(`uploader push (-j ${values.jobs ?? "default"}, ${relative(PROJECT_ROOT, script)}) vs nix copy --to 'http://…?compression=zstd', each to a`);
    console.log(`fresh local Worker (npm start)${rttMs > 0 ? `, through a proxy adding ${rttMs} ms of round-trip time` : ""}; ${rounds} alternating rounds per scenario, medians\n`);
    const summary: string[] = [];
    for (const [label, paths] of [
      ["many small paths", small],
      ["a few large paths", large],
      ["both together", [...small, ...large]],
    ] as const) {
      const narBytes = (
        await Promise.all(paths.map(async (p) => Number((await runOk("nix-store", ["-q", "--size", p], { env })).trim())))
      ).reduce((a, b) => a + b, 0);
      const title = `${label}: ${paths.length} paths, ${(narBytes / 1048576).toFixed(1)} MiB of NAR`;
      console.log(title);
      const ours: number[] = [];
      const theirs: number[] = [];
      for (let round = 0; round < rounds; round++) {
        ours.push(await pushWithUploader(script, paths, env, values.jobs, rttMs));
        theirs.push(await pushWithNixCopy(paths, nix, rttMs));
        console.log(`  round ${round + 1}: uploader ${ours.at(-1)!.toFixed(2)} s, nix copy ${theirs.at(-1)!.toFixed(2)} s`);
      }
      const [o, t] = [median(ours), median(theirs)];
      const line = `${title}: uploader ${o.toFixed(2)} s, nix copy ${t.toFixed(2)} s, ratio ${(t / o).toFixed(2)}×`;
      summary.push(line);
    }
    console.log(`\nmedians (ratio = nix copy time / uploader time):`);
    for (const line of summary) console.log(`  ${line}`);
  } finally {
    await nix.cleanup();
  }
}

await main();
