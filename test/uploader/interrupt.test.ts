// A push killed with SIGKILL at a random moment leaves a cache that is consistent (no
// narinfo without its NAR or without its references' narinfos), and running the same
// push again completes it. This is the write-order commit protocol of ARCHITECTURE.md
// seen from outside: everything is checked over HTTP against the Worker.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { parseNarInfo } from "../../src/nix/narinfo.ts";
import { queryClosure, type StorePathInfo } from "../../uploader/store.ts";
import { CLI, NixSandbox, run, runOk } from "./helpers.ts";
import { startWorker, type TestWorker } from "./worker.ts";

/** Rounds of kill-and-resume, each on a fresh closure. */
const ROUNDS = 3;
/** Paths in each closure's chain, and random bytes in each: enough for a push of seconds. */
const CHAIN = 5;
const BYTES_PER_PATH = 12_000_000;

let nix: NixSandbox;
let worker: TestWorker;

beforeAll(async () => {
  nix = await NixSandbox.create();
  worker = await startWorker();
});
afterAll(async () => {
  await worker?.dispose();
  await nix?.cleanup();
});

/** A chain d0 <- d1 <- … <- top of incompressible paths, fresh each call. */
async function buildChain(): Promise<string> {
  const salt = randomBytes(8).toString("hex");
  const lines = [`let d0 = builtins.derivation { name = "nec-chain-0"; system = builtins.currentSystem; builder = "/bin/sh";`,
    `  args = [ "-c" "/bin/head -c ${BYTES_PER_PATH} /dev/urandom > $out; echo ${salt} >> $out" ]; };`];
  for (let i = 1; i < CHAIN; i++) {
    lines.push(`  d${i} = builtins.derivation { name = "nec-chain-${i}"; system = builtins.currentSystem; builder = "/bin/sh";`);
    lines.push(`    args = [ "-c" "/bin/head -c ${BYTES_PER_PATH} /dev/urandom > $out; echo \${d${i - 1}} >> $out" ]; };`);
  }
  lines.push(`in builtins.derivation { name = "nec-chain-top"; system = builtins.currentSystem; builder = "/bin/sh";`);
  lines.push(`  args = [ "-c" "echo ${Array.from({ length: CHAIN }, (_, i) => `\${d${i}}`).join(" ")} > $out" ]; }`);
  const file = join(await nix.tempDir("chain-"), "chain.nix");
  await writeFile(file, lines.join("\n"));
  return (await runOk("nix-build", [file, "--no-out-link"], { env: nix.env })).trim();
}

async function narInfoText(info: StorePathInfo): Promise<string | null> {
  const res = await fetch(`${worker.url}/${info.hashPart}.narinfo`);
  if (res.status === 404) return null;
  expect(res.status).toBe(200);
  return res.text();
}

/** The invariant: every narinfo present has its NAR and its references' narinfos. */
async function expectConsistent(closure: StorePathInfo[]): Promise<number> {
  let present = 0;
  for (const info of closure) {
    const text = await narInfoText(info);
    if (text === null) continue;
    present++;
    const narinfo = parseNarInfo(text);
    const nar = await fetch(`${worker.url}/${narinfo.url}`, { method: "HEAD" });
    expect(nar.status, `NAR of ${info.path}`).toBe(200);
    expect(Number(nar.headers.get("content-length"))).toBe(narinfo.fileSize);
    for (const ref of info.references) {
      const refInfo = closure.find((c) => c.path === ref)!;
      expect(await narInfoText(refInfo), `reference ${ref} of ${info.path}`).not.toBeNull();
    }
  }
  return present;
}

test(`a push killed at a random moment leaves a consistent cache and resumes (${ROUNDS} rounds)`, { timeout: 600_000 }, async () => {
  const env: NodeJS.ProcessEnv = { ...nix.env, NIX_CACHE_URL: worker.url, NIX_CACHE_TOKEN: worker.token, TMPDIR: await nix.tempDir("tmp-") };
  for (let round = 0; round < ROUNDS; round++) {
    const top = await buildChain();
    const closure = await queryClosure([top], { env: nix.env });
    expect(closure).toHaveLength(CHAIN + 1);

    // -j 2 so that several paths are in flight when the kill lands.
    const child = spawn(process.execPath, [CLI, "push", "-j", "2", top], { env, stdio: "ignore" });
    const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
    // From just after startup (~0.5 s: Node, nix path-info, planning) to near the end.
    const delay = 300 + Math.random() * 2500;
    await new Promise((resolve) => setTimeout(resolve, delay));
    child.kill("SIGKILL");
    await exited;

    const before = await expectConsistent(closure);
    const again = await run(process.execPath, [CLI, "push", "--json", top], { env });
    expect(again.code, again.stderr).toBe(0);
    const summary = JSON.parse(again.stdout) as { uploaded: number; alreadyCached: number };
    expect(summary.uploaded + summary.alreadyCached).toBe(CHAIN + 1);
    expect(summary.alreadyCached).toBe(before);
    expect(await expectConsistent(closure)).toBe(CHAIN + 1);
  }
});
