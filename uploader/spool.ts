// The spool: a directory of queued store paths, the one protocol between whatever queues
// paths (`uploader post-build-hook`, the store watcher itself, a CI step) and
// `uploader watch-store`, which pushes them.
//
//   <spool>/<name>.paths     a job: store paths, one absolute path per line ("\n"-ended;
//                            blank lines and lines starting with "#" are ignored)
//   <spool>/.<name>.tmp      a job being written; renamed to <name>.paths when complete,
//                            so a reader never sees half a job (rename is atomic)
//   <spool>/watcher.sock     a Unix socket `watch-store` listens on while it runs
//   <spool>/failed/          jobs of paths the watcher gave up on, and malformed jobs
//
// A producer writes its job (to the .tmp name, then renames it) and then connects to
// watcher.sock: a running watcher answers one line, `nix-edge-cache watch-store <pid>`,
// closes the connection and reads the spool; no answer (no socket, connection refused)
// means no watcher runs, and the job waits until one starts. The watcher deletes a job
// once every path in it is in the cache (uploaded, already there, or signed by an
// upstream cache) or no longer valid in the store. Until then the job stays on disk: a
// watcher killed at any moment loses nothing, its successor pushes the job again.
// Names only need to be unique; `<ms since epoch>-<producer>-<pid>-<random>` sorts them
// in the order they were queued.
import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, readdir, rename, rm, unlink } from "node:fs/promises";
import { connect, createServer, type Server } from "node:net";
import { homedir } from "node:os";
import { join } from "node:path";
import { parseStorePathBaseName } from "../src/nix/store-path.ts";
import { EXIT_LOCAL, UploaderError, messageOf } from "./errors.ts";

/** Environment variable naming the spool directory (`--spool` wins over it). */
export const SPOOL_ENV = "NIX_CACHE_SPOOL";
/** A complete job's file name ends in this. */
export const JOB_SUFFIX = ".paths";
/** The socket a running watcher listens on, inside the spool. */
export const SOCKET_NAME = "watcher.sock";
/** Where jobs the watcher gave up on go, inside the spool. */
export const FAILED_DIR = "failed";
/** What the watcher answers on its socket, followed by " <pid>\n". */
export const GREETING = "nix-edge-cache watch-store";
/**
 * How long a producer waits for the watcher's answer. A watcher answers at once (it only
 * writes one line); a longer wait would only delay the build that runs the hook.
 */
export const PING_TIMEOUT_MS = 2_000;
/** Unix socket paths longer than this do not fit in sockaddr_un (108 bytes with the NUL). */
const MAX_SOCKET_PATH = 107;

/** The spool directory cannot be used, or a job in it is malformed. */
export class SpoolError extends UploaderError {
  constructor(message: string, hint?: string, options?: ErrorOptions) {
    super(message, EXIT_LOCAL, hint, options);
  }
}

/** A watcher already serves this spool: two would push every job twice. */
export class WatcherRunningError extends UploaderError {
  constructor(spool: string, pid: number) {
    super(`another uploader watch-store (pid ${pid}) is already watching ${spool}`, EXIT_LOCAL, "stop it first, or give this one its own --spool directory");
  }
}

/**
 * The spool directory: the flag, else $NIX_CACHE_SPOOL, else
 * $XDG_STATE_HOME/nix-edge-cache/spool (~/.local/state/nix-edge-cache/spool).
 */
export function spoolDir(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const given = flag?.trim() || env[SPOOL_ENV]?.trim();
  if (given) return given;
  const state = env.XDG_STATE_HOME?.startsWith("/") ? env.XDG_STATE_HOME : join(env.HOME || homedir(), ".local", "state");
  return join(state, "nix-edge-cache", "spool");
}

/** Creates the spool directory (mode 0700: whoever can queue a path can publish it). */
export async function ensureSpool(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new SpoolError(`cannot create the spool directory ${dir}: ${messageOf(err)}`, `pass --spool <dir> (or set ${SPOOL_ENV}) to a directory you can write`, { cause: err });
  }
}

/** A job's text: one store path per line. */
export function formatJob(paths: readonly string[]): string {
  return paths.map((p) => `${p}\n`).join("");
}

/**
 * The store paths of a job's text, duplicates removed. Throws SpoolError naming the line
 * when one is not an absolute store path (`/<store dir>/<hash>-<name>`).
 */
export function parseJob(text: string): string[] {
  const paths: string[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "" || line.startsWith("#")) continue;
    if (!isStorePath(line)) throw new SpoolError(`line ${i + 1} is not a store path: ${JSON.stringify(line.slice(0, 200))}`);
    if (!paths.includes(line)) paths.push(line);
  }
  return paths;
}

/** `/…/<32 hash chars>-<name>`: an absolute path, without blanks, whose last component is a store path's. */
export function isStorePath(path: string): boolean {
  if (!path.startsWith("/") || /\s/.test(path)) return false;
  const slash = path.lastIndexOf("/");
  return slash > 0 && parseStorePathBaseName(path.slice(slash + 1)) !== null;
}

/** A fresh job name for `producer` (letters and digits). */
export function newJobName(producer: string): string {
  return `${String(Date.now()).padStart(13, "0")}-${producer}-${process.pid}-${randomBytes(4).toString("hex")}${JOB_SUFFIX}`;
}

/**
 * Writes a job atomically (temp file, fsync, rename) and returns its file name. `name`
 * lets the caller know the name before the file appears.
 */
export async function writeJob(dir: string, paths: readonly string[], name: string = newJobName("job")): Promise<string> {
  const tmp = join(dir, `.${name}.tmp`);
  try {
    const file = await open(tmp, "wx", 0o644);
    try {
      await file.writeFile(formatJob(paths));
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(tmp, join(dir, name));
  } catch (err) {
    await rm(tmp, { force: true });
    throw new SpoolError(`cannot queue in ${dir}: ${messageOf(err)}`, `check that ${dir} is a directory you can write (--spool, ${SPOOL_ENV})`, { cause: err });
  }
  return name;
}

/** The names of the complete jobs in the spool, oldest first. */
export async function listJobs(dir: string): Promise<string[]> {
  const names = await readdir(dir);
  return names.filter((n) => n.endsWith(JOB_SUFFIX) && !n.startsWith(".")).sort();
}

/** A job's paths; null when it is gone (another reader finished it). */
export async function readJob(dir: string, name: string): Promise<string[] | null> {
  let text: string;
  try {
    text = await readFile(join(dir, name), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
  return parseJob(text);
}

export async function removeJob(dir: string, name: string): Promise<void> {
  await rm(join(dir, name), { force: true });
}

/** Moves a job into failed/ (keeping its name), for a person to look at. */
export async function moveToFailed(dir: string, name: string): Promise<string> {
  const failed = join(dir, FAILED_DIR);
  await mkdir(failed, { recursive: true, mode: 0o700 });
  await rename(join(dir, name), join(failed, name));
  return join(failed, name);
}

/** Writes a job straight into failed/ and returns its path. */
export async function writeFailedJob(dir: string, paths: readonly string[]): Promise<string> {
  const failed = join(dir, FAILED_DIR);
  await mkdir(failed, { recursive: true, mode: 0o700 });
  return join(failed, await writeJob(failed, paths, newJobName("failed")));
}

export function socketPath(dir: string): string {
  return join(dir, SOCKET_NAME);
}

/**
 * Asks whether a watcher serves the spool: its pid, or null when none answers (no socket,
 * a stale one, or no answer within PING_TIMEOUT_MS). Connecting also makes a running
 * watcher read the spool at once.
 */
export function pingWatcher(dir: string, timeoutMs: number = PING_TIMEOUT_MS): Promise<number | null> {
  return new Promise((resolve) => {
    const socket = connect(socketPath(dir));
    let answer = "";
    const done = (pid: number | null): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(pid);
    };
    const timer = setTimeout(() => done(null), timeoutMs);
    const greeting = new RegExp(`^${GREETING} (\\d+)$`);
    const parse = (): number | null => {
      const m = greeting.exec(answer.split("\n")[0]!.trim());
      return m ? Number(m[1]) : null;
    };
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      answer += chunk;
      if (answer.includes("\n") || answer.length > 200) done(parse());
    });
    socket.on("end", () => done(parse()));
    socket.on("error", () => done(null));
  });
}

/**
 * Listens on the spool's socket for the life of a watcher: each connection gets the
 * greeting and calls `onWake`. Throws WatcherRunningError when another watcher answers
 * there; a socket left by a watcher that died is replaced.
 */
export async function listenOnSpool(dir: string, onWake: () => void): Promise<Server> {
  const path = socketPath(dir);
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) {
    throw new SpoolError(`the spool's socket path is too long for a Unix socket (${Buffer.byteLength(path)} bytes, at most ${MAX_SOCKET_PATH}): ${path}`, `use a shorter --spool directory`);
  }
  const other = await pingWatcher(dir);
  if (other !== null) throw new WatcherRunningError(dir, other);
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw new SpoolError(`cannot replace the stale socket ${path}: ${messageOf(err)}`, undefined, { cause: err });
  }
  const server = createServer((socket) => {
    socket.on("error", () => {});
    socket.end(`${GREETING} ${process.pid}\n`);
    onWake();
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) => reject(new SpoolError(`cannot listen on ${path}: ${messageOf(err)}`, undefined, { cause: err })));
    server.listen(path, () => resolve());
  });
  return server;
}

/** Stops listening and removes the socket, so producers see at once that no watcher runs. */
export async function closeSpoolSocket(server: Server, dir: string): Promise<void> {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await rm(socketPath(dir), { force: true });
}
