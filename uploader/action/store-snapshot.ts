// Which store paths a job created: a listing of the store directory when the action's main
// step runs, compared with the listing at the end of the job.
//
// Why a directory listing rather than `nix path-info --all`: it needs neither Nix on PATH
// nor a running daemon, takes milliseconds on a store of 100,000 paths, and cannot fail
// halfway. What a listing also contains is filtered out at the end: entries that are not
// store paths (`.links`, temporary files), lock files, derivations (`.drv`: clients never
// substitute them) and paths that are not valid (a build still running, or one that failed),
// which `nix-store --check-validity --print-invalid` reports.
import { spawn } from "node:child_process";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { parseStorePathBaseName } from "../../src/nix/store-path.ts";

/** Nix's lock file next to a path being built: `<hash>-<name>.lock`. */
const LOCK_SUFFIX = ".lock";
/** Derivations: build recipes, which substitution never needs. */
const DRV_SUFFIX = ".drv";
/**
 * Paths per `nix-store --check-validity` call: about 90 bytes a path makes ~90 KiB of
 * arguments, far below the ~2 MiB Linux allows for a command line and its environment.
 */
const VALIDITY_BATCH = 1000;

/** The base names in the store directory; an absent store (Nix not installed yet) is empty. */
export async function listStore(storeDir: string): Promise<string[]> {
  try {
    return (await readdir(storeDir)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
}

export async function writeSnapshot(file: string, names: readonly string[]): Promise<void> {
  await writeFile(file, names.length > 0 ? `${names.join("\n")}\n` : "");
}

export async function readSnapshot(file: string): Promise<Set<string>> {
  const text = await readFile(file, "utf8");
  return new Set(text.split("\n").filter((l) => l !== ""));
}

/** Store paths (full) whose base names are in `now` but not in `before`, minus non-outputs. */
export function newOutputs(before: ReadonlySet<string>, now: readonly string[], storeDir: string): string[] {
  const dir = storeDir.replace(/\/+$/, "");
  return now
    .filter((name) => !before.has(name))
    .filter((name) => !name.endsWith(LOCK_SUFFIX) && !name.endsWith(DRV_SUFFIX))
    .filter((name) => parseStorePathBaseName(name) !== null)
    .map((name) => `${dir}/${name}`);
}

/**
 * The paths Nix considers valid (registered in its database), in the given order. Throws
 * when nix-store cannot run: the caller reports it.
 */
export async function validPaths(paths: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<string[]> {
  const invalid = new Set<string>();
  for (let i = 0; i < paths.length; i += VALIDITY_BATCH) {
    const batch = paths.slice(i, i + VALIDITY_BATCH);
    const out = await capture("nix-store", ["--check-validity", "--print-invalid", ...batch], env);
    for (const line of out.split("\n")) if (line) invalid.add(line.trim());
  }
  return paths.filter((p) => !invalid.has(p));
}

function capture(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", (err) => reject(new Error(`cannot run ${cmd}: ${err.message}`)));
    child.on("close", (code) => {
      if (code === 0) resolve(stdout);
      else reject(new Error(`${cmd} ${args[0]} failed (exit ${code}): ${stderr.trim().split("\n").slice(-3).join(" ")}`));
    });
  });
}
