// The local Nix store as the uploader sees it: which store paths the command-line
// arguments name, and the closure with each path's metadata (NarHash, NarSize, references,
// deriver, signatures, content address).
//
// Metadata comes from `nix path-info --json --recursive`, which works on single-user
// installs and through a daemon alike. Its JSON has changed shape across Nix versions and
// this module reads all of them:
//   <= 2.18   [{"path": "/nix/store/…", "narHash": "sha256-<base64>", …}, …]
//   2.19+     {"/nix/store/…": {"narHash": …, …} | null, …}
//   newer     hashes as {"algorithm", "format", "hash"} objects, store paths as base names,
//             "ca" as {"method", "hash"}
//   2.34 `--json-format 2`: {"version": 2, "storeDir": "/nix/store", "info": {<base name>: …}}
//             (2.34 warns that `--json` without `--json-format` is deprecated; older Nix
//             rejects the flag, so queryClosure asks for format 2 and falls back once)
// Hashes are normalised to `sha256:<nix32>`, the form narinfo files and fingerprints use.
import { spawn } from "node:child_process";
import { realpath } from "node:fs/promises";
import { isAbsolute, resolve } from "node:path";
import { normaliseSha256 } from "../src/nix/hash.ts";
import { STORE_DIR, parseStorePathBaseName } from "../src/nix/store-path.ts";
import { InvalidStorePathError, NixError, messageOf } from "./errors.ts";

/** Everything the uploader needs to know about one store path. */
export interface StorePathInfo {
  /** Full path, `/nix/store/<hash>-<name>`. */
  path: string;
  /** The 32-character hash part, the narinfo's file name. */
  hashPart: string;
  /** `sha256:<nix32>` of the NAR, as recorded in the store database. */
  narHash: string;
  narSize: number;
  /** Full store paths, possibly including `path` itself. */
  references: string[];
  /** Full path of the `.drv`, when known. */
  deriver?: string;
  /** Signatures the store already holds (`name:base64`). */
  sigs: string[];
  /** Content address (`fixed:r:sha256:…`, `text:sha256:…`), for content-addressed paths. */
  ca?: string;
}

export interface StoreOptions {
  /** The `nix` program (default: `nix` from PATH). */
  nix?: string;
  /** The store directory (default: NIX_STORE_DIR or /nix/store). */
  storeDir?: string;
  env?: NodeJS.ProcessEnv;
}

/** The store directory in use: Nix's own NIX_STORE_DIR override, else /nix/store. */
export function defaultStoreDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.NIX_STORE_DIR || STORE_DIR;
}

/**
 * Turns command-line arguments into top-level store paths: a store path as is, a
 * `./result` symlink (or any path leading into the store) to the store path it points
 * into. Throws InvalidStorePathError naming the argument.
 */
export async function resolveStorePaths(args: readonly string[], storeDir: string = defaultStoreDir()): Promise<string[]> {
  const out: string[] = [];
  for (const arg of args) {
    const absolute = isAbsolute(arg) ? resolve(arg) : resolve(process.cwd(), arg);
    // A literal store path needs no file-system access (and names the path itself, not
    // wherever a symlink inside the store might point).
    let inStore = topStorePath(absolute, storeDir);
    if (!inStore) {
      let real: string;
      try {
        real = await realpath(absolute);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        throw new InvalidStorePathError(arg, code === "ENOENT" ? "no such file or directory" : messageOf(err));
      }
      inStore = topStorePath(real, storeDir) ?? topStorePath(real, storeDir, await realpathOr(storeDir));
      if (!inStore) {
        throw new InvalidStorePathError(arg, `not in the Nix store (${storeDir})`, "give a store path or a symlink to one, such as ./result");
      }
    }
    if (!out.includes(inStore)) out.push(inStore);
  }
  return out;
}

/**
 * `<storeDir>/<base>` for a path at or below a store path, null outside the store.
 * `under` is the directory to match against when it differs from `storeDir` (the store
 * directory's own real path, when it is reached through a symlink).
 */
function topStorePath(path: string, storeDir: string, under: string = storeDir): string | null {
  const prefix = under.endsWith("/") ? under : `${under}/`;
  if (!path.startsWith(prefix)) return null;
  const base = path.slice(prefix.length).split("/")[0] ?? "";
  if (!parseStorePathBaseName(base)) return null;
  return `${storeDir.replace(/\/+$/, "")}/${base}`;
}

async function realpathOr(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch {
    return path;
  }
}

/** A `.drv` argument and what push does with it: its outputs, of which some may be unbuilt. */
export interface DerivationArgument {
  drv: string;
  outputs: string[];
  unbuilt: string[];
}

/**
 * Replaces derivations (`.drv` store paths) by their outputs, which is what a push of a
 * `.drv` means: the outputs and their closures, not the derivation file. Throws
 * InvalidStorePathError naming the derivation when an output is not built. Returns the
 * paths to push and the derivations met (for a line saying what happens).
 */
export async function expandDerivations(paths: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<{ paths: string[]; derivations: DerivationArgument[] }> {
  const out: string[] = [];
  const derivations: DerivationArgument[] = [];
  for (const path of paths) {
    if (!path.endsWith(".drv")) {
      if (!out.includes(path)) out.push(path);
      continue;
    }
    const q = await run("nix-store", ["-q", "--outputs", path], env);
    if (q.code !== 0) throw new InvalidStorePathError(path, `is not a derivation Nix knows: ${lastLines(q.stderr, 1)}`);
    const outputs = q.stdout.split("\n").filter((l) => l !== "");
    const check = await run("nix-store", ["--check-validity", "--print-invalid", ...outputs], env);
    const unbuilt = check.stdout.split("\n").filter((l) => l !== "");
    if (unbuilt.length > 0) {
      throw new InvalidStorePathError(
        path,
        `is a derivation whose output${unbuilt.length === 1 ? "" : "s"} ${unbuilt.join(", ")} ${unbuilt.length === 1 ? "is" : "are"} not built`,
        `push pushes a derivation's outputs: build them first (nix-build ${path}, or nix build '${path}^*')`,
      );
    }
    derivations.push({ drv: path, outputs, unbuilt });
    for (const o of outputs) if (!out.includes(o)) out.push(o);
  }
  return { paths: out, derivations };
}

/**
 * `--json-format` per nix program: Nix 2.34 deprecates `--json` without it ("will become an
 * error"), and Nix before it rejects the flag ("unrecognised flag"). The first query tries
 * format 2 and falls back to the plain `--json` once; the answer is kept for the process.
 */
const jsonFormatFlag = new Map<string, readonly string[]>();

/** The `--json-format` flags queryClosure settled on for `nix`; undefined before its first query. */
export function pathInfoFormatFlags(nix = "nix"): readonly string[] | undefined {
  return jsonFormatFlag.get(nix);
}

/** How Nix before 2.34 refuses a flag it does not know. */
const UNKNOWN_JSON_FORMAT = /unrecogni[sz]ed flag '--json-format'/;

/**
 * The closure of `paths` with metadata, from `nix path-info --json --recursive`.
 * Throws NixError when nix cannot run or fails, InvalidStorePathError when Nix says a path
 * is not valid (not built, or garbage-collected).
 */
export async function queryClosure(paths: readonly string[], options: StoreOptions = {}): Promise<StorePathInfo[]> {
  if (paths.length === 0) return [];
  const storeDir = options.storeDir ?? defaultStoreDir(options.env);
  const nix = options.nix ?? "nix";
  const env = options.env ?? process.env;
  const query = (format: readonly string[]) =>
    run(nix, ["--extra-experimental-features", "nix-command", "path-info", "--json", ...format, "--recursive", ...paths], env);
  const known = jsonFormatFlag.get(nix);
  let result = await query(known ?? ["--json-format", "2"]);
  if (known === undefined) {
    if (result.code !== 0 && UNKNOWN_JSON_FORMAT.test(result.stderr)) {
      jsonFormatFlag.set(nix, []);
      result = await query([]);
    } else if (result.code === 0) {
      jsonFormatFlag.set(nix, ["--json-format", "2"]);
    }
  }
  const { code, stdout, stderr } = result;
  if (code !== 0) {
    const invalid = /path '([^']+)' is not valid/.exec(stderr);
    if (invalid) {
      throw new InvalidStorePathError(invalid[1]!, "is not valid in the Nix store", "build it first, or check it was not garbage-collected");
    }
    throw new NixError(`nix path-info failed (exit ${code}): ${lastLines(stderr)}`);
  }
  return parsePathInfoJson(stdout, storeDir);
}

/** Parses any known shape of `nix path-info --json` output (see the file comment). */
export function parsePathInfoJson(text: string, storeDir: string = STORE_DIR): StorePathInfo[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new NixError(`cannot read the output of nix path-info --json: ${messageOf(err)}`);
  }
  // --json-format 2 wraps the entries: {"version": 2, "storeDir": …, "info": {…}}.
  if (isObject(parsed) && typeof parsed.version === "number" && isObject(parsed.info)) {
    if (parsed.version !== 2) throw new NixError(`nix path-info --json gave format version ${parsed.version}; this uploader reads versions 1 and 2`);
    if (typeof parsed.storeDir === "string" && parsed.storeDir !== "") storeDir = parsed.storeDir;
    parsed = parsed.info;
  }
  const entries: Array<[string | undefined, unknown]> = Array.isArray(parsed)
    ? parsed.map((e) => [undefined, e])
    : isObject(parsed)
      ? Object.entries(parsed)
      : [];
  if (!Array.isArray(parsed) && !isObject(parsed)) {
    throw new NixError("unexpected output from nix path-info --json (neither a list nor an object)");
  }
  const infos: StorePathInfo[] = [];
  for (const [key, value] of entries) {
    const keyPath = key === undefined ? undefined : fullPath(key, storeDir);
    if (value === null) {
      throw new InvalidStorePathError(keyPath ?? "?", "is not valid in the Nix store", "build it first, or check it was not garbage-collected");
    }
    if (!isObject(value)) throw new NixError("unexpected entry in nix path-info --json output");
    // Old versions list `{"path": …, "valid": false}` for invalid paths.
    const path = typeof value.path === "string" ? fullPath(value.path, storeDir) : keyPath;
    if (!path) throw new NixError("nix path-info --json entry without a path");
    if (value.valid === false) {
      throw new InvalidStorePathError(path, "is not valid in the Nix store", "build it first, or check it was not garbage-collected");
    }
    const base = path.slice(path.lastIndexOf("/") + 1);
    const sp = parseStorePathBaseName(base);
    if (!sp) throw new NixError(`nix path-info reported a malformed store path: ${path}`);
    const narSize = value.narSize;
    if (typeof narSize !== "number" || !Number.isSafeInteger(narSize) || narSize <= 0) {
      throw new NixError(`${path}: nix path-info gave no valid narSize`);
    }
    const info: StorePathInfo = {
      path,
      hashPart: sp.hash,
      narHash: hashField(value.narHash, path, "narHash"),
      narSize,
      references: stringList(value.references, path, "references").map((r) => fullPath(r, storeDir)),
      sigs: stringList(value.signatures ?? value.sigs ?? [], path, "signatures"),
    };
    if (typeof value.deriver === "string" && value.deriver !== "") info.deriver = fullPath(value.deriver, storeDir);
    const ca = contentAddress(value.ca);
    if (ca) info.ca = ca;
    infos.push(info);
  }
  return infos;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Newer Nix writes store paths as base names; older ones as full paths. */
function fullPath(p: string, storeDir: string): string {
  return p.includes("/") ? p : `${storeDir.replace(/\/$/, "")}/${p}`;
}

function stringList(v: unknown, path: string, field: string): string[] {
  if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) {
    throw new NixError(`${path}: nix path-info gave a malformed ${field} list`);
  }
  return v as string[];
}

/** A hash in any form Nix has printed, as `sha256:<nix32>`. */
function hashField(v: unknown, path: string, field: string): string {
  try {
    return normaliseSha256(hashString(v));
  } catch (err) {
    throw new NixError(`${path}: nix path-info gave an unusable ${field}: ${messageOf(err)}`);
  }
}

function hashString(v: unknown): string {
  if (typeof v === "string") return v;
  if (isObject(v) && typeof v.hash === "string") {
    const algorithm = typeof v.algorithm === "string" ? v.algorithm : "sha256";
    switch (v.format) {
      case "base64":
        return `${algorithm}-${v.hash}`;
      case "nix32":
      case "base32":
      case "base16":
        return `${algorithm}:${v.hash}`;
      default:
        return v.hash;
    }
  }
  throw new Error("not a hash");
}

/** The narinfo `CA` value for the string or structured forms; undefined if unknown. */
function contentAddress(v: unknown): string | undefined {
  if (typeof v === "string") return v || undefined;
  if (!isObject(v) || v.hash === undefined) return undefined;
  let hash: string;
  try {
    hash = normaliseSha256(hashString(v.hash));
  } catch {
    return undefined;
  }
  switch (v.method) {
    case "nar":
      return `fixed:r:${hash}`;
    case "flat":
      return `fixed:${hash}`;
    case "text":
      return `text:${hash}`;
    default:
      // git-hashed and future methods: leaving CA out only means a signature is needed.
      return undefined;
  }
}

function lastLines(text: string, n = 5): string {
  const lines = text.trim().split("\n").filter((l) => l.trim() !== "");
  return lines.slice(-n).join("\n") || "(no output)";
}

/** Runs a program to completion, collecting its output. */
function run(program: string, args: readonly string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(program, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    child.on("error", (e: NodeJS.ErrnoException) => {
      reject(
        e.code === "ENOENT"
          ? new NixError(`cannot run ${program}: not found`, "install Nix (https://nixos.org/download) or put `nix` on PATH")
          : new NixError(`cannot run ${program}: ${e.message}`, undefined, { cause: e }),
      );
    });
    child.on("close", (code, signal) =>
      resolvePromise({
        code: code ?? (signal ? 128 : 1),
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
      }),
    );
  });
}
