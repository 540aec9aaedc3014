// Startup work that would otherwise land on the first requests of every isolate. V8
// compiles a function when it is first called, and on a fresh isolate the first narinfo
// upload paid ~14 ms of CPU for compiling its way through the routing, the settings and
// the narinfo checks (bench/worker-cpu.ts), past the free plan's 10 ms. Module evaluation
// is startup, with its own budget, not a request's CPU; so the Worker runs the pure parts of
// its hot paths once there, on a built-in narinfo, parses its settings and imports its keys.
//
// Nothing here does I/O (workerd forbids it outside a request) or can fail startup: a
// setting that does not parse fails every request, as before, with its message.

import type { App } from "./app.ts";
import { settingsOf, type WorkerEnv } from "./env.ts";
import { checkDocument } from "./ingest/narinfo-acceptance.ts";
import { decide } from "./ingest/narinfo-store.ts";
import { formatNarInfo, parseNarInfo, referenceHashes } from "./nix/narinfo.ts";
import { fingerprint, prepareKeys } from "./nix/signature.ts";
import { keyFromUrl } from "./storage/keys.ts";
import { encodeNarInfoMeta } from "./storage/narinfo-meta.ts";
import { rowOf } from "./storage/path-index.ts";

const HASH = "0".repeat(32);
const SAMPLE_NARINFO = [
  `StorePath: /nix/store/${HASH}-warm-up`,
  `URL: nar/${"0".repeat(52)}.nar.zst`,
  "Compression: zstd",
  `FileHash: sha256:${"0".repeat(52)}`,
  "FileSize: 1",
  `NarHash: sha256:${"1".repeat(52)}`,
  "NarSize: 1",
  `References: ${HASH}-warm-up ${"1".repeat(32)}-warm-up-dep`,
  "",
].join("\n");

/**
 * Runs the pure parts of a narinfo upload and the router once; never throws. (Not a
 * request through the app: even its 404 does what workerd refuses outside a request.)
 */
export function warmUp(app: App, env: WorkerEnv | undefined): void {
  try {
    if (env !== undefined) {
      const settings = settingsOf(env);
      // WebCrypto's import of the signing and trusted keys (a few hundred µs each): a
      // mismatched key is reported by the uploads that need it.
      prepareKeys(settings.signingKey, settings.trustedKeys).catch(() => {});
    }
  } catch {
    // Reported by every request (app.ts) until the setting is fixed.
  }
  try {
    const info = parseNarInfo(SAMPLE_NARINFO);
    checkDocument(info, HASH);
    fingerprint(info);
    referenceHashes(info);
    rowOf(info, null, 0);
    encodeNarInfoMeta(info, 0);
    decide(formatNarInfo(info), info);
    keyFromUrl(new URL(`https://warm-up.invalid/${HASH}.narinfo`));
    app.router.match("PUT", `/${HASH}.narinfo`);
  } catch (err) {
    console.warn("warm-up: the built-in narinfo no longer passes the checks", err);
  }
}
