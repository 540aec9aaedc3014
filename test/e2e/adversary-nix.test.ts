// End to end with a real Nix: an honest pipeline pushes a closure with the uploader to the
// cache as `npm start` runs it (the Worker signs with its own key), then a second write
// token (another pipeline, hostile) tries everything it can against the published paths:
// other contents under the same store paths, huge, many and forged signatures, a misnamed
// reference, a multipart upload of garbage under a published NAR's name, pins and a
// collection. Every attempt is refused, and afterwards Nix substitutes every honest path
// into an empty store, trusting only the cache's key, with the original contents.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { buildClosure, LocalCache, NixClient, PROJECT_ROOT, runOk, type Closure } from "./harness.ts";
import { formatNarInfo, parseNarInfo, type NarInfo } from "../../src/nix/narinfo.ts";
import { encodeNix32 } from "../../src/nix/nix32.ts";
import { serializeNar } from "../../src/nix/nar-writer.ts";

const CLI = join(PROJECT_ROOT, "uploader", "cli.ts");
const HOSTILE_TOKEN = "hostile-pipeline-token";

let nix: NixClient;
let cache: LocalCache;
let closure: Closure;

beforeAll(async () => {
  nix = await NixClient.create();
  closure = await buildClosure(nix);
  cache = await LocalCache.start({ WRITE_TOKEN_HOSTILE: HOSTILE_TOKEN });
});

afterAll(async () => {
  await cache?.stop();
  await nix?.cleanup();
});

function hostile(path: string, init: RequestInit = {}): Promise<Response> {
  return fetch(`${cache.url}${path}`, { ...init, headers: { Authorization: `Bearer ${HOSTILE_TOKEN}`, ...init.headers } });
}

function sha256(bytes: Uint8Array): Buffer {
  return createHash("sha256").update(bytes).digest();
}

/** The nar/ dump of `path` in `store` (or the real store), hashed: equal hashes, equal trees. */
async function dumpHash(path: string, store?: string): Promise<string> {
  const args = store === undefined ? ["--dump", path] : ["--store", store, "--dump", path];
  const out = await runOk("sh", ["-c", `nix-store ${args.map((a) => `'${a}'`).join(" ")} | sha256sum`], { env: await nix.env() });
  return out.split(" ")[0]!;
}

describe("a hostile write token against a published closure, then a real Nix", () => {
  it("changes nothing that Nix then substitutes", async () => {
    await runOk(process.execPath, [CLI, "push", "--json", "--cache", cache.url, closure.top], {
      env: { ...(await nix.env()), NIX_CACHE_TOKEN: cache.token },
    });
    const paths = [closure.dep, closure.tree, closure.top];
    const published = new Map<string, { text: string; info: NarInfo }>();
    for (const p of paths) {
      const hash = p.slice("/nix/store/".length, "/nix/store/".length + 32);
      const text = await (await fetch(`${cache.url}/${hash}.narinfo`)).text();
      published.set(hash, { text, info: parseNarInfo(text) });
    }
    const before = await cache.bucketSnapshot();
    const statuses: string[] = [];
    const expectStatus = async (what: string, res: Response, expected: number[]) => {
      statuses.push(`${what}: ${res.status}`);
      expect(expected, `${what} answered ${res.status}: ${await res.text()}`).toContain(res.status);
    };

    for (const [hash, { info }] of published) {
      // Other contents under the same store path: a NAR that does hash to its own name…
      const evilNar = await serializeNar({ type: "regular", contents: new TextEncoder().encode(`evil ${hash}\n`) });
      const evilFile = `${encodeNix32(sha256(evilNar))}.nar`;
      await expectStatus("evil NAR", await hostile(`/nar/${evilFile}`, { method: "PUT", body: evilNar }), [201, 204]);
      const evilInfo: NarInfo = {
        ...info,
        url: `nar/${evilFile}`,
        compression: "none",
        fileHash: `sha256:${encodeNix32(sha256(evilNar))}`,
        fileSize: evilNar.length,
        narHash: `sha256:${encodeNix32(sha256(evilNar))}`,
        narSize: evilNar.length,
        sigs: [],
      };
      // …and a narinfo pointing the published path at it.
      await expectStatus("replacement narinfo", await hostile(`/${hash}.narinfo`, { method: "PUT", body: formatNarInfo(evilInfo) }), [409]);
      const fake = (name: string) => `${name}:${Buffer.alloc(64, 5).toString("base64")}`;
      await expectStatus("huge key name", await hostile(`/${hash}.narinfo`, { method: "PUT", body: formatNarInfo({ ...info, sigs: [fake("k".repeat(1_040_000))] }) }), [413]);
      const flood = Array.from({ length: 40 }, (_, i) => fake(`flood-${i}`));
      await expectStatus("40 signatures", await hostile(`/${hash}.narinfo`, { method: "PUT", body: formatNarInfo({ ...info, sigs: flood }) }), [413]);
      const cacheKeyName = cache.publicKey.slice(0, cache.publicKey.indexOf(":"));
      // A forged Sig under the cache's own key name: the Worker keeps its own signature.
      await expectStatus("forged own-key signature", await hostile(`/${hash}.narinfo`, { method: "PUT", body: formatNarInfo({ ...info, sigs: [fake(cacheKeyName)] }) }), [204]);
      // Garbage in parts under the published NAR's name.
      const narFile = info.url.slice("nar/".length);
      const start = await hostile(`/_api/v1/multipart/nar/${narFile}`, { method: "POST", body: JSON.stringify({ size: info.fileSize }) });
      await expectStatus("multipart start on a stored NAR", start, [200]);
    }
    // A reference to a published hash part under another name.
    const depHash = closure.dep.slice("/nix/store/".length, "/nix/store/".length + 32);
    const own = await serializeNar({ type: "regular", contents: new TextEncoder().encode("misnamed\n") });
    const ownFile = `${encodeNix32(sha256(own))}.nar`;
    await expectStatus("own NAR", await hostile(`/nar/${ownFile}`, { method: "PUT", body: own }), [201, 204]);
    const misnamed: NarInfo = {
      storePath: `/nix/store/${"0".repeat(31)}1-misnamed`,
      url: `nar/${ownFile}`,
      compression: "none",
      fileSize: own.length,
      narHash: `sha256:${encodeNix32(sha256(own))}`,
      narSize: own.length,
      references: [`${depHash}-not-the-dependency`],
      sigs: [],
      extra: [],
    };
    await expectStatus("misnamed reference", await hostile(`/${"0".repeat(31)}1.narinfo`, { method: "PUT", body: formatNarInfo(misnamed) }), [422]);
    await expectStatus("pin", await hostile("/_api/v1/pins/mine", { method: "PUT", body: JSON.stringify({ path: closure.top }) }), [401]);
    await expectStatus("collection", await hostile("/_api/v1/gc", { method: "POST", body: "{}" }), [401]);

    // The published narinfos are byte for byte what they were.
    for (const [hash, { text }] of published) expect(await (await fetch(`${cache.url}/${hash}.narinfo`)).text()).toBe(text);
    // Only the hostile token's own NARs were added; nothing else changed.
    const after = await cache.bucketSnapshot();
    const added = after.split("\n").filter((l) => !before.split("\n").includes(l));
    expect(before.split("\n").filter((l) => !after.split("\n").includes(l)), "a stored object changed or went").toEqual([]);
    expect(added.length).toBeLessThanOrEqual(published.size + 1);

    const store = await nix.emptyStore();
    await runOk("nix-store", ["--store", store, "-r", closure.top, "--option", "substituters", cache.url, "--option", "trusted-public-keys", cache.publicKey], {
      env: await nix.env(),
    });
    for (const p of paths) expect(await dumpHash(p, store), `${p} substituted with other contents`).toBe(await dumpHash(p));
  });
});
