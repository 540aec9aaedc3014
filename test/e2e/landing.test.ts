// The landing page in a real headless Chromium (Debian's `chromium`), against the Worker as
// `npm start` runs it: the page renders, its configuration snippets carry the cache's own
// URL and the configured keys, the statistics of a collection are shown, and a screenshot
// is saved to test/out/landing.png (git-ignored) for a person to look at.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdir, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildClosure, LocalCache, NixClient, PROJECT_ROOT, run, runOk } from "./harness.ts";

const OUT_DIR = join(PROJECT_ROOT, "test", "out");
const SCREENSHOT = join(OUT_DIR, "landing.png");
/** A second trusted key (the test fixture's), shown next to the cache's own signing key. */
const OTHER_KEY = "test-cache-1:j8nWbo1fsujfC0VmpxHXnIdBwOPmkyB8ZHAQd2lQ8vA=";
/** An aggregated upstream that refuses connections at once (the tests have no internet). */
const AGGREGATED = "http://127.0.0.1:9";
/** Chromium gives up on a page after this long. */
const BROWSER_TIMEOUT_MS = 60_000;

let cache: LocalCache;
let nix: NixClient;
let profile: string;

/** Runs headless Chromium with a throwaway profile and nothing that phones home. */
async function chromium(args: string[]): Promise<string> {
  const r = await run("timeout", [
    String(BROWSER_TIMEOUT_MS / 1000),
    "chromium",
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    `--user-data-dir=${profile}`,
    ...args,
  ]);
  if (r.code !== 0) throw new Error(`chromium ${args.join(" ")} failed (${r.code}):\n${r.stderr}`);
  return r.stdout;
}

/** The text of the `<pre id=…>` snippet in serialised DOM, entities decoded. */
function snippet(dom: string, id: string): string {
  const m = new RegExp(`<pre id="${id}"><code>([\\s\\S]*?)</code></pre>`).exec(dom);
  if (!m) throw new Error(`no #${id} in the page`);
  return m[1]!.replaceAll("&lt;", "<").replaceAll("&gt;", ">").replaceAll("&quot;", '"').replaceAll("&#39;", "'").replaceAll("&amp;", "&");
}

beforeAll(async () => {
  profile = await mkdtemp(join(tmpdir(), "nec-chromium-"));
  nix = await NixClient.create();
  const closure = await buildClosure(nix);
  cache = await LocalCache.start({
    TRUSTED_PUBLIC_KEYS: OTHER_KEY,
    UPSTREAM_CACHES: "https://cache.nixos.org",
    AGGREGATE_UPSTREAMS: AGGREGATED,
    GC_UPLOAD_WINDOW_SECONDS: "1",
  });
  const netrc = await nix.netrc(cache.token);
  // With TRUSTED_PUBLIC_KEYS set, uploads need a signature by that key: sign with the
  // fixture's secret half.
  const secret = join(PROJECT_ROOT, "test", "fixtures", "keys", "test-cache-1.secret");
  await runOk("nix", ["copy", "--to", `${cache.url}?compression=zstd&secret-key=${secret}`, closure.top, "--option", "netrc-file", netrc], {
    env: await nix.env(),
  });
  const devVars = await readFile(join(cache.stateDir, "dev.vars"), "utf8");
  const adminToken = /^ADMIN_TOKEN=(.*)$/m.exec(devVars)![1]!;
  // A collection that keeps everything counts the statistics the page shows.
  await runOk(process.execPath, [join(PROJECT_ROOT, "uploader", "cli.ts"), "gc", "--older-than", "1000d", "--cache", cache.url, "--admin-token", adminToken]);
}, 300_000);

afterAll(async () => {
  await cache?.stop();
  await nix?.cleanup();
  if (profile) await rm(profile, { recursive: true, force: true });
});

describe("npm start's Worker", () => {
  it("starts without an error in its log (its warm-up runs at global scope, where workerd refuses I/O)", () => {
    expect(cache.logs).toContain("Ready on");
    expect(cache.logs).not.toMatch(/ERROR|unexpected error|Disallowed operation|warm-up:/);
  });
});

describe("the landing page in headless Chromium", () => {
  it("renders the cache's URL, keys, configuration snippets, statistics and upstreams", async () => {
    const dom = await chromium(["--dump-dom", `${cache.url}/`]);
    const host = new URL(cache.url).host;
    expect(dom).toContain(`<title>${host} · Nix binary cache</title>`);
    expect(dom).toContain(`<h1 id="name">${host}</h1>`);

    const keys = `${cache.publicKey} ${OTHER_KEY}`;
    expect(snippet(dom, "nix-conf")).toBe(`extra-substituters = ${cache.url}\nextra-trusted-public-keys = ${keys}\n`);
    for (const id of ["nixos", "flake"]) {
      const text = snippet(dom, id);
      expect(text).toContain(`extra-substituters = [ "${cache.url}" ];`);
      expect(text).toContain(`extra-trusted-public-keys = [\n      "${cache.publicKey}"\n      "${OTHER_KEY}"\n    ];`);
    }
    expect(snippet(dom, "nixos")).toMatch(/nix\.settings = \{/);
    expect(snippet(dom, "flake")).toMatch(/nixConfig = \{/);
    expect(snippet(dom, "push-nix")).toBe(`nix copy --extra-experimental-features nix-command --to '${cache.url}?compression=zstd' ./result\n`);
    expect(dom).toContain("--option narinfo-cache-positive-ttl 0");
    expect(snippet(dom, "push-uploader")).toContain(`--cache ${cache.url}`);

    // Statistics of the collection: the closure's 3 paths and their NARs.
    expect(dom).toMatch(/<th scope="row">Store paths<\/th><td>3<\/td>/);
    expect(dom).toMatch(/<th scope="row">NAR files stored<\/th><td>3 \(/);
    expect(dom).toMatch(/<th scope="row">Last garbage collection<\/th><td>[^<]*0 paths and 0 NARs deleted/);

    expect(dom).toContain(`<code>${AGGREGATED}</code>`);
    expect(dom).toContain("<code>https://cache.nixos.org</code>");
    expect(dom).toContain("30 days after they were last pushed");
  }, 120_000);

  it("takes a screenshot of the page", async () => {
    await mkdir(OUT_DIR, { recursive: true });
    await rm(SCREENSHOT, { force: true });
    await chromium([`--screenshot=${SCREENSHOT}`, "--window-size=1100,2300", `${cache.url}/`]);
    const png = await readFile(SCREENSHOT);
    expect([...png.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    expect((await stat(SCREENSHOT)).size).toBeGreaterThan(20_000);
  }, 120_000);
});
