// `uploader import <source> [path...]`: flags → source → closure → plan → upload → summary,
// as `push` does (the library work is in ../import.ts and ../sources/).
import { createWriteStream } from "node:fs";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parsePublicKey, type PublicKey } from "../../src/nix/signature.ts";
import { DEFAULT_COMPRESSION } from "../compress.ts";
import { UsageError, messageOf } from "../errors.ts";
import { HttpClient, type RetryEvent } from "../http.ts";
import { exportClosure, cacheTransfer, exportTransfer, parsePathArgument, planImport, readCacheClosure, type SourceClosure } from "../import.ts";
import { readSecretKeyFile } from "../key-file.ts";
import { MULTIPART_CONCURRENCY } from "../multipart.ts";
import { Progress } from "../progress.ts";
import { DEFAULT_JOBS, type PathTransfer } from "../run-plan.ts";
import { RemoteCache } from "../remote-cache.ts";
import { ENV, parseCommandLine, resolveCache } from "../settings.ts";
import { SourceError, type CacheSource } from "../sources/cache-source.ts";
import { readExportFile, scanExport, type ExportEntry } from "../sources/export-stream.ts";
import { FileSource } from "../sources/file-source.ts";
import { HttpSource } from "../sources/http-source.ts";
import { S3Source } from "../sources/s3-source.ts";
import { LEVEL_AND_UPSTREAM_HELP, PUSH_OPTIONS, REPORT_OPTIONS, pushChoices } from "./flags.ts";
import { carryOut, printPlan } from "./push.ts";

export const HELP = `Usage: uploader import [options] <source> [path...]

Copies store paths into the cache from another binary cache or from a
\`nix-store --export\` stream, without Nix. <source> is one of:

  file:///dir                 a binary cache directory (nix copy --to file:///dir)
  http(s)://host/prefix       any binary cache read anonymously (nix-serve, harmonia,
                              an S3/MinIO bucket with anonymous download)
  's3://bucket?endpoint=…&profile=…&region=…'
                              an S3 bucket through the S3 API, with the parameters and
                              credentials of Nix's S3 store (AWS_ACCESS_KEY_ID/
                              AWS_SECRET_ACCESS_KEY, else the profile in ~/.aws/credentials)
  FILE, or - for stdin        the output of nix-store --export

From a cache it copies the closures of the given paths (store paths, base names or
hash parts), or with --all every path a file:// or s3:// cache holds; each NAR is
kept as stored (with its signatures) and checked against its narinfo. From an export
stream it copies every path the stream holds (or the closures of the given paths),
compressed as push does, signed with --secret-key-file (or by the Worker's
SIGNING_KEY). Paths the cache has are skipped; nothing partial reaches it.

Options:
  --cache <url|name>        the cache's URL, or a name given to login [env ${ENV.cacheUrl}]
  --token <token>           a write token for the cache          [env ${ENV.token}]
  --secret-key-file <file>  also sign narinfos with this Nix secret key
                                                                 [env ${ENV.secretKeyFile}]
  --all                     every path of the source cache (file:// and s3:// only)
  --trusted-key <key>       import only paths signed by this public key (name:base64;
                            repeatable); others are reported with what depends on them
  --recompress              decompress each NAR, check its NarHash, and compress it
                            again with --compression (new FileHash and FileSize)
  -j, --jobs <n>            paths copied in parallel (default ${DEFAULT_JOBS})
  --compression <method>    zstd, xz or none, for export streams and --recompress
                            (default ${DEFAULT_COMPRESSION})
${LEVEL_AND_UPSTREAM_HELP}
  --no-skip-upstream        copy paths signed by upstream keys too
  --dry-run                 show what would be copied, copy nothing
  --json                    print the result as JSON on stdout
  -v, --verbose             also report cached and skipped paths, and retries
  -h, --help                show this help

Exit status: 0 all copied or already there; 1 some paths failed or were refused;
2 bad usage; 3 the source (unreadable, credentials refused, not a binary cache or an
export stream) or a local problem (key file); 4 cache unreachable or token refused.
`;

export async function run(args: string[]): Promise<void> {
  const { values, positionals } = parseCommandLine(args, {
    ...PUSH_OPTIONS,
    ...REPORT_OPTIONS,
    all: { type: "boolean" },
    "trusted-key": { type: "string", multiple: true },
    recompress: { type: "boolean" },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const [sourceArg, ...pathArgs] = positionals;
  if (sourceArg === undefined) throw new UsageError("no source given", "usage: uploader import [options] <source> [path...]");
  // The destination: flags, else environment, else what `uploader login` stored.
  const settings = resolveCache(values);
  const { url: cacheUrl, token } = settings;
  const { jobs, compression, level, upstreamKeys } = pushChoices(values);
  const trustedKeys = (values["trusted-key"] ?? []).map(parseTrustedKey);
  const roots = pathArgs.map((arg) => {
    const parsed = parsePathArgument(arg);
    if (!parsed) throw new UsageError(`"${arg}" is not a store path, a base name <hash>-<name> or a hash part`);
    return parsed;
  });
  if (values.all && roots.length > 0) throw new UsageError("--all and a list of paths contradict each other");

  const progress = new Progress({ verbose: values.verbose ?? false });
  const onRetry = (e: RetryEvent): void => progress.retry(e);
  const kind = sourceKind(sourceArg);
  if (kind === "export") {
    if (trustedKeys.length > 0) throw new UsageError("--trusted-key needs a cache source: an export stream carries no signatures", "sign what you import with --secret-key-file");
    if (values.recompress) throw new UsageError("--recompress needs a cache source: NARs from an export stream are always compressed with --compression");
    if (values.all) throw new UsageError("--all is for cache sources: an export stream is imported whole unless paths are named");
  } else {
    if (!values.all && roots.length === 0) {
      throw new UsageError("no paths given", "name the store paths to import (their closures are copied), or pass --all");
    }
    if (!values.recompress && (values.compression !== undefined || values["compression-level"] !== undefined)) {
      throw new UsageError("--compression applies to export streams and with --recompress", "NARs from a cache keep their compression unless --recompress is given");
    }
  }
  const keyFile = settings.secretKeyFile;
  const secretKey = keyFile ? await readSecretKeyFile(keyFile) : undefined;

  const http = new HttpClient({ baseUrl: cacheUrl, token, maxSockets: jobs + MULTIPART_CONCURRENCY, onRetry });
  const cache = new RemoteCache(http);
  // Spool of an export stream read from stdin, removed at the end.
  let spoolDir: string | undefined;
  let source: CacheSource | undefined;
  try {
    let closure: SourceClosure;
    let transfer: PathTransfer;
    if (kind === "export") {
      const { file, entries } = await scanExportSource(sourceArg, async () => (spoolDir = await mkdtemp(join(tmpdir(), "nix-edge-cache-import-"))));
      progress.detail(`${sourceArg === "-" ? "standard input" : sourceArg}: ${entries.length} paths in the export stream`);
      closure = exportClosure(entries, values.all || roots.length === 0 ? "all" : roots);
      transfer = exportTransfer(file, entries);
    } else {
      source = await openCacheSource(sourceArg, kind, onRetry);
      if (source instanceof S3Source) {
        progress.detail(source.credentials ? `signing S3 requests with credentials from ${source.credentials.from}` : "no AWS credentials found: S3 requests are anonymous");
      }
      await checkCacheInfo(source);
      const read = await readCacheClosure(source, values.all ? "all" : roots, { trustedKeys });
      progress.detail(`${source.name}: read ${read.narInfos.size} narinfos`);
      closure = read;
      transfer = cacheTransfer({ source, narInfos: read.narInfos, recompress: values.recompress ?? false });
    }
    const plan = await planImport(closure, cache, upstreamKeys);
    if (values["dry-run"]) {
      printPlan(plan, values.json ?? false);
      return;
    }
    if (kind !== "export" && !values.recompress) progress.detail("NARs keep the compression they have in the source");
    await carryOut(plan, { cache, compression, level, secretKey, jobs, progress, transfer, json: values.json ?? false, command: "import" });
  } finally {
    source?.close();
    http.close();
    if (spoolDir) await rm(spoolDir, { recursive: true, force: true });
  }
}

type SourceKind = "file" | "http" | "s3" | "export";

function sourceKind(arg: string): SourceKind {
  if (arg.startsWith("file://")) return "file";
  if (arg.startsWith("http://") || arg.startsWith("https://")) return "http";
  if (arg.startsWith("s3://")) return "s3";
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(arg)) {
    throw new UsageError(`unsupported source "${arg}"`, "use file://, http://, https:// or s3://, or an export stream's file name (- for stdin)");
  }
  return "export";
}

async function openCacheSource(arg: string, kind: Exclude<SourceKind, "export">, onRetry: (e: RetryEvent) => void): Promise<CacheSource> {
  switch (kind) {
    case "file": {
      let url: URL;
      try {
        url = new URL(arg);
      } catch {
        throw new UsageError(`"${arg}" is not a file:// URL`, "use file:///absolute/path");
      }
      const source = new FileSource(url);
      await source.check();
      return source;
    }
    case "http": {
      let url: URL;
      try {
        url = new URL(arg);
      } catch {
        throw new UsageError(`"${arg}" is not a URL`);
      }
      return new HttpSource(url, { onRetry });
    }
    case "s3":
      return S3Source.open(arg, { onRetry });
  }
}

/** The source must be a binary cache of /nix/store (the only store the cache serves). */
async function checkCacheInfo(source: CacheSource): Promise<void> {
  const info = await source.cacheInfo();
  if (info === null) {
    throw new SourceError(`${source.name} has no nix-cache-info: it is not a binary cache (or not its root)`, "give the URL that Nix uses as a substituter or that nix copy --to wrote");
  }
  const storeDir = /^StoreDir: (.*)$/m.exec(info)?.[1]?.trim();
  if (storeDir !== undefined && storeDir !== "/nix/store") {
    throw new SourceError(`${source.name} is a cache of ${storeDir}, but this cache serves /nix/store`);
  }
}

/** Reads an export stream once; standard input is spooled to a file to be read again. */
async function scanExportSource(arg: string, makeSpoolDir: () => Promise<string>): Promise<{ file: string; entries: ExportEntry[] }> {
  if (arg === "-") {
    const file = join(await makeSpoolDir(), "stdin.export");
    const spool = createWriteStream(file);
    try {
      const entries = await scanExport(process.stdin, { spool });
      await new Promise<void>((done, fail) => spool.end((err?: Error | null) => (err ? fail(err) : done())));
      return { file, entries };
    } catch (err) {
      spool.destroy();
      throw err;
    }
  }
  const file = resolve(arg);
  let isFile = false;
  try {
    const st = await stat(file);
    if (st.isDirectory()) throw new UsageError(`${arg} is a directory`, `a binary cache directory is given as file://${file}`);
    isFile = st.isFile();
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(`${arg}: ${(err as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : messageOf(err)}`, "give a binary cache URL (file://, http(s)://, s3://) or a nix-store --export file");
  }
  if (!isFile) {
    // A pipe or device cannot be read twice: copy it like standard input.
    const spoolFile = join(await makeSpoolDir(), "input.export");
    const spool = createWriteStream(spoolFile);
    const entries = await scanExport(readExportFile(file), { spool });
    await new Promise<void>((done, fail) => spool.end((err?: Error | null) => (err ? fail(err) : done())));
    return { file: spoolFile, entries };
  }
  return { file, entries: await scanExport(readExportFile(file)) };
}

function parseTrustedKey(text: string): PublicKey {
  try {
    return parsePublicKey(text.trim());
  } catch (err) {
    throw new UsageError(`--trusted-key ${JSON.stringify(text)} is not a Nix public key: ${messageOf(err)}`, "give it as name:base64, as in trusted-public-keys");
  }
}
