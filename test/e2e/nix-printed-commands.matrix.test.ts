// What the project tells users to type, run exactly as printed, with every Nix version of
// the matrix, in a configuration that does not enable `nix-command` (as on a fresh
// install): the `nix copy` lines that `npm start`, the README and the landing page print.
// Without their `--extra-experimental-features nix-command`, every version refuses them.
//
// And the trap of pushing with plain `nix copy` to a Worker that signs, then substituting
// on the same machine: Nix keeps each narinfo it uploaded (without the Worker's signature)
// in its narinfo disk cache for 30 days, so that machine refuses the paths. The test keeps
// one XDG_CACHE_HOME across push and substitution, as a user's machine does, and proves
// the trap and the remedies the README gives: sign as you push with a key that machine
// trusts, or substitute with narinfo-cache-positive-ttl = 0 (once: Nix then remembers the
// signed narinfo). `uploader push` never touches Nix's narinfo cache.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdir, readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { ChrootNix, hashPart, matrixChroots } from "./chroot-nix.ts";
import { LocalCache, PROJECT_ROOT } from "./harness.ts";
import { codeBlocks, section } from "./readme-commands.ts";

const chroots = await matrixChroots();

/** The settings of a fresh single-user install (no experimental features), test-friendly. */
const PLAIN_CONF = `sandbox = false
build-users-group =
substituters =
narinfo-cache-negative-ttl = 0
download-attempts = 1
stalled-download-timeout = 10
`;

let cache: LocalCache;

beforeAll(async () => {
  cache = await LocalCache.start();
});

afterAll(async () => {
  await cache?.stop();
});

/** The `nix copy` line `npm start` printed. */
function npmStartCommand(): string {
  const line = cache.logs.split("\n").find((l) => /^\s+nix copy /.test(l));
  if (!line) throw new Error(`npm start printed no nix copy command:\n${cache.logs.slice(0, 3000)}`);
  return line.trim();
}

/** The `nix copy` line of the README's "With plain Nix", for this cache. */
async function readmeCommand(): Promise<string> {
  const readme = await readFile(join(PROJECT_ROOT, "README.md"), "utf8");
  const lines = codeBlocks(section(readme, "Pushing")).flatMap((b) => b.text.split("\n"));
  const line = lines.find((l) => l.startsWith("nix copy "));
  if (!line) throw new Error("the README shows no nix copy command under Pushing");
  return line.replaceAll("https://cache.example.com", cache.url);
}

/** The `nix copy` line of the landing page. */
async function landingCommand(): Promise<string> {
  const html = await (await fetch(`${cache.url}/`)).text();
  const m = /<pre id="push-nix"><code>([\s\S]*?)<\/code><\/pre>/.exec(html);
  if (!m) throw new Error("the landing page shows no push-nix command");
  return m[1]!.replaceAll("&lt;", "<").replaceAll("&gt;", ">").replaceAll("&quot;", '"').replaceAll("&#39;", "'").replaceAll("&amp;", "&").trim();
}

describe.each(chroots.map((c) => [c.name]))("Nix %s", (name) => {
  let nix: ChrootNix;
  /** A configuration dir without nix-command, with the write token in its default netrc. */
  let plainConf: string;

  beforeAll(async () => {
    nix = await ChrootNix.create(chroots.find((c) => c.name === name)!);
    plainConf = await nix.confWith(PLAIN_CONF);
    await nix.writeFile(join(plainConf, "netrc"), `machine 127.0.0.1 login nix password ${cache.token}\n`, 0o600);
    // npm start's command names its netrc file by its path on the host: make that path
    // exist inside the chroot too.
    const netrc = join(cache.stateDir, "netrc");
    await mkdir(nix.host(dirname(netrc)), { recursive: true });
    await nix.writeFile(netrc, await readFile(netrc, "utf8"), 0o600);
  });

  afterAll(async () => {
    await nix?.cleanup();
  });

  for (const [source, command] of [
    ["npm start", async () => npmStartCommand()],
    ["the README", readmeCommand],
    ["the landing page", landingCommand],
  ] as const) {
    it(`runs the nix copy command ${source} prints, as printed`, async () => {
      const printed = await command();
      expect(printed).toContain("./result");
      const path = await nix.addText("printed", `${source}\n`);
      const run = (cmd: string) => nix.run("/bin/sh", ["-c", cmd.replaceAll("./result", path)], { confDir: plainConf });
      // Without the flag it prints, this Nix refuses the command: the flag is needed.
      const bare = await run(printed.replace("--extra-experimental-features nix-command ", ""));
      expect(bare.code).not.toBe(0);
      expect(bare.stderr).toContain("experimental Nix feature 'nix-command' is disabled");
      const r = await run(printed);
      expect(r.code, r.stderr).toBe(0);
      expect((await fetch(`${cache.url}/${hashPart(path)}.narinfo`)).status).toBe(200);
    });
  }

  describe("pushing with nix copy, then substituting on the same machine", () => {
    /** Push and substitute with one narinfo disk cache, as on a user's machine. */
    async function pushThenSubstitute(options: { pushQuery?: string; keys?: string[]; substituteOptions?: string[] } = {}) {
      const xdg = await nix.tempDir("xdg-kept-");
      // Input-addressed: a client takes it only with a signature by a key it trusts.
      const path = await nix.buildText("same-machine");
      await nix.nixOk(["copy", "--to", `${cache.url}?compression=zstd${options.pushQuery ?? ""}`, path, "--option", "netrc-file", await nix.netrc(cache.token)], { xdg });
      const substitute = async (extra: string[]) => {
        const store = await nix.emptyStore();
        return nix.nixStore(
          ["--store", store, "-r", path, "--option", "substituters", cache.url, "--option", "trusted-public-keys", (options.keys ?? [cache.publicKey]).join(" "), ...extra],
          { xdg },
        );
      };
      return { path, xdg, substitute };
    }

    it("is refused there: Nix remembers the narinfo it uploaded, without the Worker's signature", async () => {
      const { substitute } = await pushThenSubstitute();
      const r = await substitute([]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/not signed by any of the keys|lacks a valid signature|lacks a signature/);
    });

    it("works once the narinfo is asked for again (narinfo-cache-positive-ttl 0), and from then on", async () => {
      const { substitute } = await pushThenSubstitute();
      const once = await substitute(["--option", "narinfo-cache-positive-ttl", "0"]);
      expect(once.code, once.stderr).toBe(0);
      const after = await substitute([]);
      expect(after.code, after.stderr).toBe(0);
    });

    it("works when the push signs with a key that machine trusts, and elsewhere with the cache's key alone", async () => {
      const dir = await nix.tempDir("pusher-key-");
      const [sk, pk] = [join(dir, "secret"), join(dir, "public")];
      await nix.runOk("nix-store", ["--generate-binary-cache-key", `pusher-${name}`, sk, pk]);
      const pusherKey = (await nix.readFile(pk)).trim();
      const { path, substitute } = await pushThenSubstitute({ pushQuery: `&secret-key=${sk}`, keys: [cache.publicKey, pusherKey] });
      const r = await substitute([]);
      expect(r.code, r.stderr).toBe(0);
      // Another machine (a fresh narinfo cache) trusting only the cache's key.
      const elsewhere = await nix.nixStore(["--store", await nix.emptyStore(), "-r", path, "--option", "substituters", cache.url, "--option", "trusted-public-keys", cache.publicKey]);
      expect(elsewhere.code, elsewhere.stderr).toBe(0);
    });
  });
});
