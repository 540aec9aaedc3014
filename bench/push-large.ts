// Benchmark: one large path (1 GiB by default, half incompressible), `uploader push` to a
// fresh local Worker (as `npm start` runs it: wrangler dev, workerd, local R2) against the
// CPU-bound limit on the same data, `nix-store --dump <path> | zstd -3 -T0 > /dev/null`:
// serialising and compressing on every core with nothing hashed, stored or sent. Goal: the
// push takes at most 1.25 × the limit.
//
// Also timed, to show where the time goes: the uploader's own NAR pipeline alone
// (prepareNar: NAR writer, two SHA-256, zstd, into a temp file), without any upload. The
// push itself sends the file's parts while compressing once the file is over the cache's
// request limit (an upload named at completion), then completes it, which has the local R2
// copy the assembled NAR to check its sha256. bench/push-large-floor.ts measures what the
// local Worker's machinery alone costs for the same bytes; run both from a snapshot of a
// commit (a git worktree): `wrangler dev` rebuilds the Worker when the sources it serves
// change, and a rebuild in the middle of a push answers 503 and costs retries.
//
// Rounds alternate; medians. Cache start-up is not timed; each push goes to an empty cache.
//
// The push runs the compiled uploader, as installed (push-compiled.ts); --from-source runs
// the TypeScript sources.
//
// Usage: node bench/push-large.ts [--rounds N] [--mib N] [--from-source]
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, open, rm } from "node:fs/promises";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { LocalCache, NixClient, runOk } from "../test/e2e/harness.ts";
import { queryClosure } from "../uploader/store.ts";
import { prepareNar } from "../uploader/path-upload.ts";
import { RemoteCache } from "../uploader/remote-cache.ts";
import { HttpClient } from "../uploader/http.ts";
import { median, timed } from "./timing.ts";
import { uploaderScript } from "./push-compiled.ts";

const DEFAULT_ROUNDS = 3;
const DEFAULT_MIB = 1024;
/** The goal: push time over the CPU-bound limit. */
const GOAL = 1.25;

/** `mib` MiB alternating 1 MiB blocks of random bytes and of repeated text. */
async function generate(file: string, mib: number, salt: string): Promise<void> {
  const fh = await open(file, "w");
  for (let i = 0; i < mib; i++) {
    await fh.write(i % 2 === 0 ? randomBytes(1 << 20) : Buffer.alloc(1 << 20, `${salt} text region ${i}\n`));
  }
  await fh.close();
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rounds: { type: "string" }, mib: { type: "string" }, "from-source": { type: "boolean" } } });
  const script = await uploaderScript(values["from-source"] ?? false);
  const rounds = values.rounds ? Number(values.rounds) : DEFAULT_ROUNDS;
  const mib = values.mib ? Number(values.mib) : DEFAULT_MIB;
  const nix = await NixClient.create();
  const env = await nix.env();
  try {
    const dir = join(nix.dir, "large");
    await mkdir(dir);
    await generate(join(dir, "data.bin"), mib, randomBytes(8).toString("hex"));
    const path = (await runOk("nix-store", ["--add", dir], { env })).trim();
    await rm(dir, { recursive: true });
    const [info] = await queryClosure([path], { env });
    console.log(`one path of ${mib} MiB (half random, half text): ${path}`);
    console.log(`${cpus().length} cores (${cpus()[0]?.model ?? "?"}), Node ${process.version}, load ${loadavg().map((l) => l.toFixed(1)).join(" ")}; ${rounds} alternating rounds, medians\n`);

    const limit: number[] = [];
    const pipeline: number[] = [];
    const push: number[] = [];
    for (let round = 0; round < rounds; round++) {
      limit.push(await timed(() => runOk("sh", ["-c", `nix-store --dump '${path}' | zstd -3 -T0 -q > /dev/null`], { env })));
      const tmp = await mkdtemp(join(tmpdir(), "nec-bench-large-"));
      const http = new HttpClient({ baseUrl: "http://127.0.0.1:9" });
      try {
        pipeline.push(await timed(() => prepareNar(info!, { cache: new RemoteCache(http), compression: "zstd", tmpDir: tmp })));
      } finally {
        http.close();
        await rm(tmp, { recursive: true, force: true });
      }
      const cache = await LocalCache.start();
      try {
        const args = [script, "push", "--cache", cache.url, path];
        push.push(await timed(() => runOk(process.execPath, args, { env: { ...env, NIX_CACHE_TOKEN: cache.token } })));
      } finally {
        await cache.stop();
      }
      console.log(
        `  round ${round + 1}: limit ${limit.at(-1)!.toFixed(2)} s, uploader's NAR pipeline ${pipeline.at(-1)!.toFixed(2)} s, ` +
          `uploader push ${push.at(-1)!.toFixed(2)} s (load ${loadavg()[0]!.toFixed(1)})`,
      );
    }
    const [l, p, u] = [median(limit), median(pipeline), median(push)];
    console.log(`\nmedians: limit (nix-store --dump | zstd -3 -T0) ${l.toFixed(2)} s; uploader's NAR pipeline ${p.toFixed(2)} s (${(p / l).toFixed(2)}×);`);
    console.log(`uploader push ${u.toFixed(2)} s: ${(u / l).toFixed(2)}× the limit (goal ≤ ${GOAL}×) ${u / l <= GOAL ? "met" : "NOT met"}`);
  } finally {
    await nix.cleanup();
  }
}

await main();
