// `uploader import`: copy paths from another binary cache or a `nix-store --export`
// stream into the cache, without Nix. It plans, acts and summarises as `push` does and
// shares its machinery: the plan (plan.ts: one missing query per 500 paths, upstream
// skipping, references first), the upload (run-plan.ts, path-upload.ts, multipart.ts) and the
// reports (progress.ts). Only where a path's NAR file and narinfo come from differs
// (a PathTransfer):
//
// - From a cache, the closures of the named paths (or every narinfo, when the source can
//   list them) are read narinfo by narinfo. Each NAR file is downloaded as it is stored,
//   its FileHash and FileSize checked (and its NarHash and NarSize too when the file is
//   the NAR, when the narinfo gives no FileHash, and when recompressing), and published
//   with the narinfo's fields and signatures unchanged but for URL, FileHash, FileSize
//   (and Compression when recompressing), plus the user's signature when a key is given.
// - From an export stream, the NARs are compressed and hashed as `push` does, with
//   narinfos built from the stream's metadata and signed with the user's key.
//
// Refused before anything is sent, and reported with every path that depends on them:
// a narinfo that is malformed, is not the path asked for, or (with --trusted-key) carries
// no valid signature by a trusted key; a reference that neither the source nor the cache
// has. A NAR that does not match its narinfo fails that path while it is imported; the
// cache never gets its narinfo, nor those of the paths that depend on it.
import { createReadStream, createWriteStream } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { Writable, pipeline as pipelineStreams, type Duplex } from "node:stream";
import { pipeline } from "node:stream/promises";
import { mapConcurrent } from "../src/concurrency.ts";
import { formatSha256, normaliseSha256 } from "../src/nix/hash.ts";
import { encodeNix32 } from "../src/nix/nix32.ts";
import { extensionFor, formatNarInfo, parseNarInfo, type NarInfo } from "../src/nix/narinfo.ts";
import { signNarInfo, verifyNarInfo, withSignature, type PublicKey } from "../src/nix/signature.ts";
import { STORE_DIR, isHashPart, parseStorePath, parseStorePathBaseName } from "../src/nix/store-path.ts";
import { createDecompressor } from "./compress.ts";
import { NarMismatchError, UploaderError, EXIT_LOCAL, messageOf } from "./errors.ts";
import { planPush, type PushPlan } from "./plan.ts";
import type { PathReport } from "./progress.ts";
import type { PathTransfer } from "./run-plan.ts";
import type { RemoteCache } from "./remote-cache.ts";
import type { StorePathInfo } from "./store.ts";
import { hashingCounter, narInfoFor, prepareNar, type PreparedNar, type UploadSettings } from "./path-upload.ts";
import { SourceError, type CacheSource } from "./sources/cache-source.ts";
import { readExportNar, type ExportEntry } from "./sources/export-stream.ts";

/** Narinfos read from a source at once: a plain HTTP cache answers one request per path. */
export const NARINFO_CONCURRENCY = 16;

/** A NAR (or its file) that does not match what the source's narinfo says about it. */
export class SourceMismatchError extends UploaderError {
  constructor(message: string) {
    super(message, EXIT_LOCAL, "the source is damaged: repair or re-upload that path there, then import again");
  }
}

/** What the source says about the paths to import. */
export interface SourceClosure {
  /** Paths with their metadata, as the plan and the upload use it. */
  infos: StorePathInfo[];
  /** Paths that cannot be imported, with why: refused narinfos, and paths the source lacks. */
  refused: Map<string, string>;
}

/** A path argument: a full store path, a base name `<hash>-<name>`, or a hash part. */
export function parsePathArgument(arg: string): { hashPart: string; path?: string } | null {
  if (isHashPart(arg)) return { hashPart: arg };
  if (arg.startsWith("/")) {
    const sp = parseStorePath(arg);
    return sp ? { hashPart: sp.hash, path: arg } : null;
  }
  const sp = parseStorePathBaseName(arg);
  return sp ? { hashPart: sp.hash, path: `${STORE_DIR}/${arg}` } : null;
}

/** A cache source's narinfo as the plan's StorePathInfo (throws on a field it cannot use). */
function infoOfNarInfo(n: NarInfo): StorePathInfo {
  const sp = parseStorePath(n.storePath);
  if (!sp) throw new Error(`StorePath ${n.storePath} is not in ${STORE_DIR}`);
  const info: StorePathInfo = {
    path: n.storePath,
    hashPart: sp.hash,
    narHash: normaliseSha256(n.narHash),
    narSize: n.narSize,
    references: n.references.map((r) => `${STORE_DIR}/${r}`),
    sigs: [...n.sigs],
  };
  if (n.narSize <= 0) throw new Error("NarSize is 0");
  if (n.deriver) info.deriver = `${STORE_DIR}/${n.deriver}`;
  if (n.ca) info.ca = n.ca;
  return info;
}

export interface CacheClosureOptions {
  /** When given, a narinfo needs a valid signature by one of these keys. */
  trustedKeys?: readonly PublicKey[];
  onNarInfo?: (count: number) => void;
}

/**
 * The closures of `roots` (or of every narinfo the source lists, for "all") as the source
 * describes them, with each narinfo as parsed. Narinfos are read breadth first, several
 * at a time.
 */
export async function readCacheClosure(
  source: CacheSource,
  roots: ReadonlyArray<{ hashPart: string; path?: string }> | "all",
  options: CacheClosureOptions = {},
): Promise<SourceClosure & { narInfos: Map<string, NarInfo> }> {
  const infos: StorePathInfo[] = [];
  const narInfos = new Map<string, NarInfo>();
  const refused = new Map<string, string>();
  const seen = new Set<string>();
  let frontier: Array<{ hashPart: string; path?: string | undefined }> = [];
  const enqueue = (item: { hashPart: string; path?: string | undefined }): void => {
    if (seen.has(item.hashPart)) return;
    seen.add(item.hashPart);
    frontier.push(item);
  };
  if (roots === "all") {
    if (!source.listNarInfos) {
      throw new SourceError(`${source.name} cannot list its paths`, "name the store paths to import, or give the cache as s3://bucket?… or file:///dir, which can be listed");
    }
    for await (const hashPart of source.listNarInfos()) enqueue({ hashPart });
  } else {
    for (const root of roots) enqueue(root);
  }
  const trusted = options.trustedKeys ?? [];
  let read = 0;
  while (frontier.length > 0) {
    const batch = frontier;
    frontier = [];
    await mapConcurrent(batch, NARINFO_CONCURRENCY, async ({ hashPart, path }) => {
      const label = path ?? hashPart;
      const text = await source.narInfo(hashPart);
      options.onNarInfo?.(++read);
      if (text === null) {
        refused.set(label, `not in the source (${source.name})`);
        return;
      }
      let narinfo: NarInfo;
      let info: StorePathInfo;
      try {
        narinfo = parseNarInfo(text);
        info = infoOfNarInfo(narinfo);
      } catch (err) {
        refused.set(label, `its narinfo in the source is not valid: ${messageOf(err)}`);
        return;
      }
      if (info.hashPart !== hashPart || (path !== undefined && info.path !== path)) {
        refused.set(label, `the source's ${hashPart}.narinfo is for another path (${info.path})`);
        return;
      }
      if (trusted.length > 0 && !(await verifyNarInfo(narinfo, trusted))) {
        refused.set(info.path, `no valid signature by a trusted key (${trusted.map((k) => k.name).join(", ")})`);
        return;
      }
      infos.push(info);
      narInfos.set(info.path, narinfo);
      for (const ref of info.references) {
        if (ref !== info.path) enqueue({ hashPart: ref.slice(STORE_DIR.length + 1, STORE_DIR.length + 33), path: ref });
      }
    });
  }
  // Breadth-first order depends on timing; the plan orders references first anyway.
  infos.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { infos, refused, narInfos };
}

/**
 * The paths of an export stream to import: all of them, or the closures (within the
 * stream) of the named ones. References that are not in the stream are "refused" here;
 * the plan lets them pass when the cache already has them.
 */
export function exportClosure(entries: readonly ExportEntry[], roots: ReadonlyArray<{ hashPart: string; path?: string }> | "all"): SourceClosure {
  const byHash = new Map(entries.map((e) => [e.hashPart, e]));
  const refused = new Map<string, string>();
  const chosen = new Map<string, ExportEntry>();
  const visit = (hashPart: string, label: string): void => {
    if (chosen.has(hashPart) || refused.has(label)) return;
    const e = byHash.get(hashPart);
    if (!e) {
      refused.set(label, "not in the export stream");
      return;
    }
    chosen.set(hashPart, e);
    for (const ref of e.references) if (ref !== e.path) visit(ref.slice(STORE_DIR.length + 1, STORE_DIR.length + 33), ref);
  };
  if (roots === "all") for (const e of entries) visit(e.hashPart, e.path);
  else for (const r of roots) visit(r.hashPart, r.path ?? r.hashPart);
  const infos = [...chosen.values()].map((e): StorePathInfo => {
    const info: StorePathInfo = { path: e.path, hashPart: e.hashPart, narHash: e.narHash, narSize: e.narSize, references: [...e.references], sigs: [] };
    if (e.deriver) info.deriver = e.deriver;
    return info;
  });
  return { infos, refused };
}

/**
 * The push plan for an import: planPush over the paths the source has, then the refused
 * ones that the cache lacks are reported as failed, and every path to upload that depends
 * on one of them as blocked. Refused paths the cache already has are no obstacle (one
 * more missing query per 500 of them).
 */
export async function planImport(closure: SourceClosure, cache: RemoteCache, upstreamKeys: readonly string[]): Promise<PushPlan> {
  const plan = await planPush(closure.infos, cache, { upstreamKeys });
  const rejected: PathReport[] = [];
  const bad = new Map<string, string>();
  if (closure.refused.size > 0) {
    const labels = [...closure.refused.keys()];
    const hashOf = (label: string): string => parsePathArgument(label)?.hashPart ?? label;
    const missing = await cache.missing(labels.map(hashOf));
    for (const label of labels) {
      if (!missing.has(hashOf(label))) continue;
      const reason = closure.refused.get(label)!;
      bad.set(label, reason);
      rejected.push({ path: label, outcome: "failed", narSize: 0, error: `${reason}; the cache does not have it either` });
    }
  }
  const toUpload: StorePathInfo[] = [];
  for (const info of plan.toUpload) {
    const dependency = info.references.find((r) => r !== info.path && bad.has(r));
    if (dependency === undefined) {
      toUpload.push(info);
      continue;
    }
    bad.set(info.path, `depends on ${dependency}`);
    rejected.push({ path: info.path, outcome: "blocked", narSize: info.narSize, error: `dependency ${dependency} cannot be imported` });
  }
  return { ...plan, toUpload, rejected };
}

export interface CacheTransferOptions {
  source: CacheSource;
  narInfos: ReadonlyMap<string, NarInfo>;
  /** Recompress with the upload settings' compression (new FileHash and FileSize). */
  recompress: boolean;
}

/** Copies NAR files from a cache source, checked, kept or recompressed. */
export function cacheTransfer(options: CacheTransferOptions): PathTransfer {
  const { source, narInfos, recompress } = options;
  const narInfoOf = (info: StorePathInfo): NarInfo => {
    const n = narInfos.get(info.path);
    if (!n) throw new Error(`no narinfo for ${info.path}`);
    return n;
  };
  return {
    async prepare(info, settings) {
      const n = narInfoOf(info);
      return recompress ? recompressNar(source, n, info, settings) : copyNarFile(source, n, info, settings);
    },
    async narInfo(info, prepared, settings) {
      let n: NarInfo = {
        ...narInfoOf(info),
        url: prepared.key,
        fileHash: prepared.fileHash,
        fileSize: prepared.fileSize,
      };
      if (recompress) n.compression = settings.compression;
      if (settings.secretKey) n = withSignature(n, await signNarInfo(n, settings.secretKey));
      return formatNarInfo(n);
    },
  };
}

/** Reads an export stream's NARs back from the file, compressed and hashed as `push` does. */
export function exportTransfer(file: string, entries: readonly ExportEntry[]): PathTransfer {
  const byPath = new Map(entries.map((e) => [e.path, e]));
  return {
    async prepare(info, settings) {
      const entry = byPath.get(info.path)!;
      try {
        return await prepareNar(info, settings, () => readExportNar(file, entry));
      } catch (err) {
        if (err instanceof NarMismatchError) {
          throw new SourceMismatchError(`${info.path}: the export stream changed while it was imported (its NAR no longer hashes to what was read first)`);
        }
        throw err;
      }
    },
    narInfo: (info, prepared, settings) => narInfoFor(info, prepared, settings),
  };
}

/**
 * Downloads the NAR file as stored into a temp file, hashing it; checks FileHash and
 * FileSize, and NarHash and NarSize when the file is the NAR (Compression none) or the
 * narinfo has no FileHash to check (then the file is decompressed once more to hash it).
 */
async function copyNarFile(source: CacheSource, n: NarInfo, info: StorePathInfo, settings: UploadSettings): Promise<PreparedNar> {
  const ext = extensionFor(n.compression);
  const file = join(settings.tmpDir, `${info.hashPart}.import.nar${ext}`);
  const counter = hashingCounter();
  try {
    const stages: Duplex[] = [];
    if (settings.observe?.nar) stages.push(settings.observe.nar());
    await pipeline([await source.openFile(n.url), ...stages, counter.stream, createWriteStream(file)]);
    const digest = counter.digest();
    const fileHash = formatSha256(digest);
    checkFile(n, info, fileHash, counter.size(), source);
    if (n.compression === "none") {
      checkNar(info, fileHash, counter.size(), source, n.url);
    } else if (n.fileHash === undefined) {
      const nar = hashingCounter();
      await pipeline([createReadStream(file), createDecompressor(n.compression), nar.stream, discard()]);
      checkNar(info, formatSha256(nar.digest()), nar.size(), source, n.url);
    }
    return { narHash: info.narHash, narSize: info.narSize, fileHash, fileSize: counter.size(), key: `nar/${encodeNix32(digest)}.nar${ext}`, file };
  } catch (err) {
    await rm(file, { force: true });
    throw err;
  }
}

/** Downloads, checks and decompresses the NAR and compresses it again as `push` does. */
async function recompressNar(source: CacheSource, n: NarInfo, info: StorePathInfo, settings: UploadSettings): Promise<PreparedNar> {
  const download = hashingCounter();
  let prepared: PreparedNar;
  try {
    prepared = await prepareNar(info, settings, async () =>
      // The callback form returns the last stream and destroys them all on an error.
      pipelineStreams(await source.openFile(n.url), download.stream, createDecompressor(n.compression), () => {}),
    );
  } catch (err) {
    // A damaged file may also fail to decompress: when all of it arrived, say that first.
    if (n.fileSize !== undefined && download.size() === n.fileSize) checkFile(n, info, formatSha256(download.digest()), download.size(), source);
    if (err instanceof NarMismatchError) throw narMismatch(info, source, n.url, err.message);
    throw err;
  }
  try {
    checkFile(n, info, formatSha256(download.digest()), download.size(), source);
  } catch (err) {
    await rm(prepared.file, { force: true });
    throw err;
  }
  return prepared;
}

function checkFile(n: NarInfo, info: StorePathInfo, fileHash: string, fileSize: number, source: CacheSource): void {
  const problems: string[] = [];
  if (n.fileSize !== undefined && n.fileSize !== fileSize) problems.push(`FileSize ${n.fileSize}, got ${fileSize} bytes`);
  if (n.fileHash !== undefined && safeNormalise(n.fileHash) !== fileHash) problems.push(`FileHash ${n.fileHash}, got ${fileHash}`);
  if (problems.length > 0) {
    throw new SourceMismatchError(`${info.path}: the NAR file ${n.url} from ${source.name} does not match its narinfo (${problems.join("; ")}); not imported`);
  }
}

function checkNar(info: StorePathInfo, narHash: string, narSize: number, source: CacheSource, url: string): void {
  if (narHash !== info.narHash || narSize !== info.narSize) {
    throw narMismatch(info, source, url, `NarHash ${info.narHash} and NarSize ${info.narSize}, got ${narHash} and ${narSize} bytes`);
  }
}

function narMismatch(info: StorePathInfo, source: CacheSource, url: string, detail: string): SourceMismatchError {
  return new SourceMismatchError(`${info.path}: the NAR ${url} from ${source.name} does not match its narinfo (${detail}); not imported`);
}

function safeNormalise(hash: string): string {
  try {
    return normaliseSha256(hash);
  } catch {
    return hash;
  }
}

/** A sink that drops what it is given (the NAR was only needed for its hash). */
function discard(): Writable {
  return new Writable({
    write(_chunk, _encoding, callback) {
      callback();
    },
  });
}
