// Startup work that would otherwise land on the first requests of every isolate. V8
// compiles a function when it is first called, and on a fresh isolate the first narinfo
// upload paid ~14 ms of CPU for compiling its way through the routing, the settings and
// the narinfo checks (bench/worker-cpu.ts), past the free plan's 10 ms. Module evaluation
// is startup, with its own budget, not a request's CPU; so the Worker runs the pure parts of
// its hot paths once there, on a built-in narinfo, parses its settings and imports its keys.
//
// Nothing here does I/O (workerd forbids it outside a request) or can fail startup: a
// setting that does not parse fails every request, as before, with its message. The
// collector's per-entry code runs once too: cron ticks often get fresh isolates.

import type { App } from "./app.ts";
import { chunkLines, fileLineNarHash, formatChunk, formatFileLine, formatPathLine, parseFileLine, parsePathLine } from "./gc/chunk-lines.ts";
import { NAR_FILE_HASH_LENGTH } from "./gc/fence.ts";
import { KeySet } from "./gc/key-set.ts";
import { formatMarkSets, parseMarkSets } from "./gc/mark-sets.ts";
import { settingsOf, type WorkerEnv } from "./env.ts";
import { checkDocument } from "./ingest/narinfo-acceptance.ts";
import { decide } from "./ingest/narinfo-store.ts";
import { formatNarInfo, parseNarInfo, referenceHashes } from "./nix/narinfo.ts";
import { fingerprint, prepareKeys } from "./nix/signature.ts";
import { HASH_PART_LENGTH, isHashPartList } from "./nix/store-path.ts";
import { keyFromUrl, listingKeyHashPart, narInfoKeyHashPart, parseNarFileName } from "./storage/keys.ts";
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
  try {
    warmUpCollector();
  } catch (err) {
    console.warn("warm-up: the collector's code failed on its built-in inputs", err);
  }
}

/**
 * The collector's per-entry code (gc/collector.ts): its mark sets, chunk lines and key
 * checks, once each. A cron tick often gets a fresh isolate, and its batch should not pay
 * for compiling them.
 */
function warmUpCollector(): void {
  const other = "1".repeat(HASH_PART_LENGTH);
  const narFile = `${"0".repeat(NAR_FILE_HASH_LENGTH)}.nar.zst`;
  const live = KeySet.create(HASH_PART_LENGTH);
  const nars = KeySet.create(NAR_FILE_HASH_LENGTH);
  live.add(HASH);
  live.setExpanded(HASH);
  if (isHashPartList(`${HASH} ${other}`)) live.addAt(HASH + other, HASH_PART_LENGTH);
  live.state(other);
  live.has(other);
  nars.add(parseNarFileName(narFile)!.fileHash);
  const sets = parseMarkSets(formatMarkSets({ live, nars, queues: { queue: other, unindexed: "", unlisted: "" } }));
  if (sets === null || !sets.live.has(HASH)) throw new Error("the mark sets did not read back");
  narInfoKeyHashPart(`${HASH}.narinfo`);
  listingKeyHashPart(`${HASH}.ls`);
  const lines = chunkLines(formatChunk([formatPathLine({ hash: HASH, name: "warm-up", fileSize: 1, narSize: 1 }), formatFileLine({ key: `nar/${narFile}`, size: 1 })]));
  parsePathLine(lines[0]!);
  parseFileLine(lines[1]!);
  fileLineNarHash(lines[1]!);
}
