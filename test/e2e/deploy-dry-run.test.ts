// The deploy guide (README, "Deploying to Cloudflare") holds up without a Cloudflare
// account: the project bundles for deployment (`wrangler deploy --dry-run`), the custom
// domain setting the guide shows is one Wrangler accepts, and every command in the README's
// shell blocks is one that Wrangler, the uploader or npm actually has, down to the flags.
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatPublicKey, parsePublicKey, parseSecretKey, publicKeyOf } from "../../src/nix/signature.ts";
import { PROJECT_ROOT, runOk, type RunResult } from "./harness.ts";
import { checkCommand, codeBlocks, helpRunner, section, shellCommands, uploaderHelp, wranglerHelp } from "./readme-commands.ts";

const WRANGLER = join(PROJECT_ROOT, "node_modules", ".bin", "wrangler");
const CLI = join(PROJECT_ROOT, "uploader", "cli.ts");
/** Wrangler offline: no telemetry, no fetches of Cloudflare's metadata. */
const ENV: NodeJS.ProcessEnv = { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false", CI: "true" };
/**
 * The Workers Free plan's limit on a Worker's size, after gzip (Cloudflare's limits page:
 * 3 MB on Free, 10 MB on Paid). A bundle over it deploys nowhere on the free plan.
 */
const FREE_PLAN_WORKER_GZIP_BYTES = 3 * 1024 * 1024;
/** Programs the README's shell blocks may run; anything else is probably a typo. */
const KNOWN_PROGRAMS = ["npm", "npx", "node", "nix", "nix-store", "curl", "openssl", "export", "mkdir", "uploader"];

let readme: string;
let scratch: string;
/** One help source for the whole file: each `wrangler … --help` takes about a second. */
const wrangler = wranglerHelp(helpRunner(WRANGLER, [], ENV, PROJECT_ROOT));

beforeAll(async () => {
  readme = await readFile(join(PROJECT_ROOT, "README.md"), "utf8");
  scratch = await mkdtemp(join(tmpdir(), "nec-deploy-"));
});
afterAll(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

function run(cmd: string, args: string[], cwd: string = PROJECT_ROOT): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd, env: ENV, encoding: "utf8", maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

/** wrangler.toml with extra top-level settings, as a config file Wrangler can use from anywhere. */
async function configWith(extra: string, name: string): Promise<string> {
  const toml = await readFile(join(PROJECT_ROOT, "wrangler.toml"), "utf8");
  const lines = toml.split("\n");
  // Top-level keys must precede the first table: the guide says "above [[r2_buckets]]".
  const firstTable = lines.findIndex((l) => /^\[/.test(l));
  expect(firstTable).toBeGreaterThan(0);
  lines.splice(firstTable, 0, extra, "");
  const text = lines.join("\n").replace(/^main = "(.*)"$/m, (_m, main: string) => `main = "${join(PROJECT_ROOT, main)}"`);
  const file = join(scratch, name);
  await writeFile(file, text);
  return file;
}

/** The package's name, which `npx -p <name> uploader …` and `npx <name> …` install and run. */
const PACKAGE_NAME = "nix-edge-cache";

/**
 * One command as the checks read it: `exec` dropped (a hook script), and the ways the
 * README runs the installed uploader without a clone (`npx -p nix-edge-cache uploader …`,
 * `npx nix-edge-cache …`) written as `npx uploader …`.
 */
function normalised(words: string[]): string[] {
  const w = words[0] === "exec" ? words.slice(1) : words;
  if (w[0] === "npx" && w[1] === "-p" && w[2] === PACKAGE_NAME) return ["npx", ...w.slice(3)];
  if (w[0] === "npx" && w[1] === PACKAGE_NAME) return ["npx", "uploader", ...w.slice(2)];
  return w;
}

/** The guide's commands, as word lists. */
function guideCommands(): string[][] {
  return codeBlocks(section(readme, "Deploying to Cloudflare"))
    .filter((b) => b.lang === "sh")
    .flatMap((b) => shellCommands(b.text))
    .map(normalised);
}

/** Every command of every sh block in the README. */
function allCommands(): string[][] {
  return codeBlocks(readme)
    .filter((b) => b.lang === "sh")
    .flatMap((b) => shellCommands(b.text))
    .map(normalised);
}

/** The words after the tool's name when the command runs it, else null. */
function argsOf(words: string[], tool: "wrangler" | "uploader"): string[] | null {
  if (words[0] === "npx" && words[1] === tool) return words.slice(2);
  if (words[0] === tool) return words.slice(1);
  if (tool === "uploader" && words[0] === "node" && words[1] === "uploader/cli.ts") return words.slice(2);
  return null;
}

describe("wrangler deploy --dry-run", () => {
  it("bundles the project's Worker, small enough for the free plan", async () => {
    const out = join(scratch, "bundle");
    const r = await run(WRANGLER, ["deploy", "--dry-run", "--outdir", out]);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toContain("--dry-run: exiting now.");
    // The R2 binding the guide's bucket is created for.
    expect(r.stdout).toMatch(/env\.CACHE \(nix-edge-cache\)\s+R2 Bucket/);
    const bundle = await readFile(join(out, "index.js"));
    expect(bundle.length).toBeGreaterThan(10_000);
    expect(gzipSync(bundle).length).toBeLessThan(FREE_PLAN_WORKER_GZIP_BYTES);
  });

  it("accepts the guide's custom domain setting, and would refuse a misspelt one", async () => {
    const block = codeBlocks(section(readme, "Deploying to Cloudflare")).find((b) => b.lang === "toml" && b.text.includes("custom_domain"));
    expect(block, "a toml block with the custom domain route").toBeDefined();
    const good = await run(WRANGLER, ["deploy", "--dry-run", "--outdir", join(scratch, "domain"), "--config", await configWith(block!.text, "domain.toml")]);
    expect(good.code, good.stderr + good.stdout).toBe(0);
    // Wrangler checks routes in a dry run, so the check above means something.
    const typo = block!.text.replace("custom_domain", "custom_domian");
    const bad = await run(WRANGLER, ["deploy", "--dry-run", "--outdir", join(scratch, "typo"), "--config", await configWith(typo, "typo.toml")]);
    expect(bad.code).not.toBe(0);
  });
});

describe("the README's commands", () => {
  it("runs only known programs", () => {
    for (const words of allCommands()) {
      expect(KNOWN_PROGRAMS, `unexpected program in: ${words.join(" ")} (extend KNOWN_PROGRAMS if it is meant)`).toContain(words[0]);
      if (words[0] === "npx") expect(["wrangler", "uploader"], words.join(" ")).toContain(words[1]);
    }
  });

  it("walks through every step of a deployment", () => {
    const commands = guideCommands().map((w) => argsOf(w, "wrangler")).filter((a) => a !== null).map((a) => a.join(" "));
    for (const expected of [
      "login",
      "r2 bucket create nix-edge-cache",
      "deploy",
      "secret put WRITE_TOKEN",
      "secret put SIGNING_KEY",
      "secret put READ_TOKEN",
    ]) {
      expect(commands).toContain(expected);
    }
    const uploader = guideCommands().map((w) => argsOf(w, "uploader")).filter((a) => a !== null);
    expect(uploader.map((a) => a[0])).toContain("keygen");
    // The bucket the guide creates is the one wrangler.toml binds.
    expect(readme).toContain("npx wrangler r2 bucket create nix-edge-cache");
  });

  it("uses only Wrangler commands, positionals and flags that exist", async () => {
    const commands = allCommands().filter((w) => argsOf(w, "wrangler") !== null);
    expect(commands.length).toBeGreaterThanOrEqual(6);
    // In parallel: the help of each command path is asked for once.
    const problems = await Promise.all(commands.map((w) => checkCommand(argsOf(w, "wrangler")!, wrangler)));
    commands.forEach((w, i) => expect(problems[i], w.join(" ")).toEqual([]));
  });

  it("tells a wrong Wrangler command from a right one", async () => {
    // The checker itself, on commands that do not exist.
    expect(await checkCommand(["r2", "buckets", "create", "x"], wrangler)).not.toEqual([]);
    expect(await checkCommand(["r2", "bucket", "create", "x", "y"], wrangler)).not.toEqual([]);
    expect(await checkCommand(["deploy", "--dryrun"], wrangler)).not.toEqual([]);
    expect(await checkCommand(["secret", "put"], wrangler)).toEqual([]);
    expect(await checkCommand(["deploy", "--dry-run", "--outdir", "dist"], wrangler)).toEqual([]);
  });

  it("uses only uploader commands and flags that exist", async () => {
    const source = uploaderHelp(helpRunner(process.execPath, [CLI], ENV, PROJECT_ROOT));
    let seen = 0;
    for (const words of allCommands()) {
      const args = argsOf(words, "uploader");
      if (!args) continue;
      seen++;
      expect(await checkCommand(args, source), words.join(" ")).toEqual([]);
    }
    expect(seen).toBeGreaterThanOrEqual(2);
    expect(await checkCommand(["keygen", "--nam", "x"], source)).not.toEqual([]);
    expect(await checkCommand(["pusher", "x"], source)).not.toEqual([]);
  });

  it("uses only npm scripts that exist", async () => {
    const pkg = JSON.parse(await readFile(join(PROJECT_ROOT, "package.json"), "utf8")) as { scripts: Record<string, string> };
    const builtins = ["install", "ci"];
    for (const words of allCommands()) {
      if (words[0] !== "npm") continue;
      const script = words[1] === "run" ? words[2] : words[1];
      if (builtins.includes(script!)) continue;
      expect(Object.keys(pkg.scripts), words.join(" ")).toContain(script);
    }
  });

  it("makes, with the guide's keygen command, a key the Worker accepts as SIGNING_KEY", async () => {
    const keygen = guideCommands().map((w) => argsOf(w, "uploader")).find((a) => a?.[0] === "keygen");
    expect(keygen).toBeDefined();
    // The guide keeps the files in ~/.nix-edge-cache, made by its mkdir: a scratch home here.
    const cwd = await mkdtemp(join(scratch, "keygen-"));
    const home = join(cwd, "home");
    const mkdirCommand = guideCommands().find((w) => w[0] === "mkdir");
    expect(mkdirCommand).toBeDefined();
    await runOk("mkdir", mkdirCommand!.slice(1).map((w) => w.replace(/^~(?=\/)/, home)));
    const args = keygen!.map((w) => w.replace(/^~(?=\/)/, home));
    const r = await run(process.execPath, [CLI, ...args], cwd);
    expect(r.code, r.stderr).toBe(0);
    const name = args[args.indexOf("--name") + 1]!;
    const secretFile = resolve(cwd, args[args.indexOf("--secret-key-file") + 1] ?? `${name}.secret`);
    expect((await stat(secretFile)).mode & 0o777).toBe(0o600);
    expect((await stat(join(home, ".nix-edge-cache"))).mode & 0o777).toBe(0o700);
    // `wrangler secret put SIGNING_KEY < file` stores the file with trailing whitespace
    // trimmed; the Worker parses that with the core's parseSecretKey.
    const key = parseSecretKey((await readFile(secretFile, "utf8")).trimEnd());
    expect(key.name).toBe(name);
    const pubFile = args[args.indexOf("--public-key-file") + 1];
    expect(pubFile).toBeDefined();
    const pub = (await readFile(resolve(cwd, pubFile!), "utf8")).trim();
    expect(parsePublicKey(pub).name).toBe(name);
    expect(pub).toBe(formatPublicKey(publicKeyOf(key)));
    expect(r.stdout.trim()).toBe(pub);
  });
});
