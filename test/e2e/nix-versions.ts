// The Nix versions the end-to-end matrix proves, each a real Debian `nix-bin` in a minimal
// Debian chroot: bookworm → 2.8.0, trixie → 2.26.3, forky (testing) → 2.34.x.
//
// Each chroot is built once (`mmdebstrap --variant=minbase` with nix-bin, zstd, xz-utils
// and ca-certificates: about a minute alone, 2.5 minutes for the three at once on two
// cores, ~250 MB each) into a git-ignored cache folder,
// `.cache/nix-chroots/<suite>` (or $NIX_CHROOT_CACHE), and reused by later runs; a
// missing or half-built one is built again. A run never writes into the cached tree: it
// mounts an overlay per chroot (the cache read-only below, a scratch layer on top), so
// every run starts from a clean store and leaves nothing behind. Into each overlay go
// /proc (Nix reads /proc/self/exe), a private /dev with its own devpts (Nix builds in a
// pseudoterminal), and the checkout read-only at its own path, so `uploader push` runs
// inside with the pinned Node (node_modules/node).
// Everything mounted is unmounted at the end, also when a test failed; mounts left by a
// run that was killed are cleaned up by the next one.
//
// The chroots share the host's network namespace: Nix inside reaches the Worker, which
// runs on the host (LocalCache), at 127.0.0.1.
//
// `node test/e2e/nix-versions.ts build` builds (or checks) the three chroots by hand.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile, readdir, rename, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const PROJECT_ROOT = resolve(new URL("../..", import.meta.url).pathname);

export interface NixVersion {
  /** Short name used in test titles: "2.8", "2.26", "2.34". */
  name: string;
  /** The Debian suite whose nix-bin it is. */
  suite: string;
  /** What `nix --version` must report (a prefix): the version the matrix claims to prove. */
  expect: string;
}

export const NIX_VERSIONS: readonly NixVersion[] = [
  { name: "2.8", suite: "bookworm", expect: "2.8." },
  { name: "2.26", suite: "trixie", expect: "2.26." },
  { name: "2.34", suite: "forky", expect: "2.34." },
];

/** Packages each chroot gets besides the minimal base (zstd/xz to check compressed bodies). */
const PACKAGES = ["nix-bin", "zstd", "xz-utils", "ca-certificates"];

const MIRROR = process.env.NIX_CHROOT_MIRROR ?? "http://deb.debian.org/debian";

/**
 * /etc/nix/nix.conf of every chroot: single-user Nix as root without a daemon, a sandbox
 * or default substituters (there is no internet). Tests still pass their own NIX_CONF_DIR.
 */
export const CHROOT_NIX_CONF = `build-users-group =
sandbox = false
experimental-features = nix-command
substituters =
`;

/** Written last into a finished chroot: its presence means the build completed. */
const READY_FILE = ".nec-ready";

export function chrootCacheDir(): string {
  return process.env.NIX_CHROOT_CACHE ?? join(PROJECT_ROOT, ".cache", "nix-chroots");
}

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<RunResult> {
  return new Promise((done) => {
    execFile(cmd, args, { env, maxBuffer: 64 << 20, encoding: "utf8" }, (err, stdout, stderr) => {
      done({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

async function runOk(cmd: string, args: readonly string[], env?: NodeJS.ProcessEnv): Promise<string> {
  const r = await run(cmd, args, env);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${r.code}):\n${r.stderr.slice(-4000)}${r.stdout.slice(-2000)}`);
  return r.stdout;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Takes a directory lock (mkdir is atomic); a lock whose owner died is taken over. */
async function withLock<T>(lockDir: string, fn: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      await mkdir(lockDir);
      await writeFile(join(lockDir, "pid"), String(process.pid));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const owner = Number(await readFile(join(lockDir, "pid"), "utf8").catch(() => "0"));
      if (owner > 0 && !pidAlive(owner)) {
        await rm(lockDir, { recursive: true, force: true });
        continue;
      }
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
  try {
    return await fn();
  } finally {
    await rm(lockDir, { recursive: true, force: true });
  }
}

/** The installed Nix version of a built chroot, or null when it is missing or incomplete. */
async function readyVersion(dir: string): Promise<string | null> {
  try {
    return (await readFile(join(dir, READY_FILE), "utf8")).trim();
  } catch {
    return null;
  }
}

/**
 * Builds the chroot of `v` unless the cache has a complete one; returns its directory and
 * the Nix version inside. Concurrent runs wait for each other (one lock per suite).
 */
export async function ensureChroot(v: NixVersion, log: (line: string) => void = () => {}): Promise<{ dir: string; nixVersion: string }> {
  const cache = chrootCacheDir();
  const dir = join(cache, v.suite);
  const ready = await readyVersion(dir);
  if (ready !== null) return { dir, nixVersion: ready };
  await mkdir(cache, { recursive: true });
  return withLock(`${dir}.lock`, async () => {
    const again = await readyVersion(dir);
    if (again !== null) return { dir, nixVersion: again };
    const started = Date.now();
    log(`building the ${v.suite} chroot for Nix ${v.name} in ${dir} (mmdebstrap, a minute or three)…`);
    const building = `${dir}.building`;
    await rm(dir, { recursive: true, force: true });
    await unmountUnder(building);
    await rm(building, { recursive: true, force: true });
    let version = "";
    // mmdebstrap resolves the packages with apt (debootstrap's own --include cannot: nix-bin
    // needs a virtual package on forky) and is about twice as fast as debootstrap followed
    // by apt-get (measured on 2 cores: the three chroots in 189 s against 357 s). It mounts
    // /proc, /sys and /dev in the new tree while packages configure and unmounts them; a
    // failed build must not leave anything mounted either way.
    try {
      const build = await run("mmdebstrap", [
        "--variant=minbase",
        `--include=${PACKAGES.join(",")}`,
        // The archive's Release files may be past their Valid-Until on a machine whose
        // clock runs ahead of the mirror it reaches; signatures are still checked.
        "--aptopt=Acquire::Check-Valid-Until \"false\"",
        "--aptopt=Acquire::Retries \"3\"",
        v.suite,
        building,
        MIRROR,
      ]);
      if (build.code !== 0) throw new Error(`mmdebstrap of ${v.suite} failed (${build.code}):\n${build.stderr.slice(-4000)}`);
      // Nix reads /proc/self/exe, so it runs only while /proc is mounted.
      await runOk("mount", ["-t", "proc", "proc", join(building, "proc")]);
      version = (await runOk("chroot", [building, "/usr/bin/nix", "--version"], chrootEnv({}))).trim().split(/\s+/).pop() ?? "";
    } finally {
      await unmountUnder(building);
    }
    await mkdir(join(building, "etc", "nix"), { recursive: true });
    await writeFile(join(building, "etc", "nix", "nix.conf"), CHROOT_NIX_CONF);
    if (!version.startsWith(v.expect)) {
      throw new Error(`the ${v.suite} chroot has Nix ${version}, not ${v.expect}x: the matrix would prove another version than it claims`);
    }
    await writeFile(join(building, READY_FILE), `${version}\n`);
    await rename(building, dir);
    log(`built the ${v.suite} chroot (Nix ${version}) in ${Math.round((Date.now() - started) / 1000)} s`);
    return { dir, nixVersion: version };
  });
}

/**
 * Builds what the cache lacks, the chroots in parallel (mostly downloads and dpkg). Every
 * build runs to its end, and cleans up after itself, before a failure is reported.
 */
async function ensureAll(versions: readonly NixVersion[], log: (line: string) => void): Promise<Array<{ dir: string; nixVersion: string }>> {
  const results = await Promise.allSettled(versions.map((v) => ensureChroot(v, log)));
  const failed = results.find((r) => r.status === "rejected");
  if (failed !== undefined) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<{ dir: string; nixVersion: string }>).value);
}

/** The environment of a command inside a chroot: nothing from the host's but what is given. */
export function chrootEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  return { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", HOME: "/root", LANG: "C.UTF-8", ...extra };
}

/** A chroot mounted for one run: its root (an overlay) and the Nix version inside. */
export interface MountedChroot {
  name: string;
  suite: string;
  nixVersion: string;
  root: string;
}

/** Prefix of the per-run directories under the system temp dir (they carry the runner's pid). */
const RUN_PREFIX = "nec-nix-run-";

async function mountPoints(): Promise<string[]> {
  const text = await readFile("/proc/self/mounts", "utf8");
  // Fields are space-separated with spaces escaped as \040.
  return text.split("\n").filter(Boolean).map((l) => l.split(" ")[1]!.replace(/\\040/g, " "));
}

/** Unmounts every mount point under `dir`, deepest first; lazily when one stays busy. */
async function unmountUnder(dir: string): Promise<void> {
  const points = (await mountPoints()).filter((p) => p === dir || p.startsWith(`${dir}/`));
  points.sort((a, b) => b.length - a.length);
  for (const p of points) {
    const r = await run("umount", [p]);
    if (r.code !== 0) await run("umount", ["-l", p]);
  }
}

/**
 * A private /dev for a chroot: a tmpfs with the few device nodes Nix and Node use, and its
 * own devpts instance (Nix opens a pseudoterminal for every build). Binding the host's
 * /dev instead would make the chroot's mounts peers of the host's (shared propagation),
 * and a mount or unmount under it could reach the host's /dev.
 */
async function mountDev(dev: string): Promise<void> {
  await runOk("mount", ["-t", "tmpfs", "-o", "mode=755,size=1m,nosuid", "tmpfs", dev]);
  for (const [name, major, minor] of [["null", 1, 3], ["zero", 1, 5], ["full", 1, 7], ["random", 1, 8], ["urandom", 1, 9], ["tty", 5, 0]] as const) {
    await runOk("mknod", ["-m", "666", join(dev, name), "c", String(major), String(minor)]);
  }
  await mkdir(join(dev, "pts"));
  await mkdir(join(dev, "shm"));
  await runOk("mount", ["-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=0620", "devpts", join(dev, "pts")]);
  await symlink("pts/ptmx", join(dev, "ptmx"));
  await symlink("/proc/self/fd", join(dev, "fd"));
  for (const [i, name] of ["stdin", "stdout", "stderr"].entries()) await symlink(`/proc/self/fd/${i}`, join(dev, name));
}

/** Removes what runs that were killed before their teardown left mounted. */
async function cleanStaleRuns(): Promise<void> {
  const base = tmpdir();
  for (const name of await readdir(base).catch(() => [] as string[])) {
    if (!name.startsWith(RUN_PREFIX)) continue;
    const pid = Number(name.slice(RUN_PREFIX.length).split("-")[0]);
    if (!Number.isInteger(pid) || pid <= 0 || pidAlive(pid)) continue;
    const dir = join(base, name);
    await unmountUnder(dir);
    if ((await mountPoints()).some((p) => p.startsWith(`${dir}/`))) continue;
    await rm(dir, { recursive: true, force: true });
  }
}

/** The chroots of one run; `unmount()` undoes every mount and deletes the scratch layers. */
export class ChrootRun {
  readonly dir: string;
  readonly chroots: MountedChroot[];

  private constructor(dir: string, chroots: MountedChroot[]) {
    this.dir = dir;
    this.chroots = chroots;
  }

  /**
   * Builds what the cache lacks (the three in parallel: mostly downloads and dpkg), then
   * mounts each chroot's overlay with /proc, /dev and the checkout.
   */
  static async mount(versions: readonly NixVersion[] = NIX_VERSIONS, log: (line: string) => void = () => {}): Promise<ChrootRun> {
    await cleanStaleRuns();
    const built = await ensureAll(versions, log);
    const dir = join(tmpdir(), `${RUN_PREFIX}${process.pid}-${randomBytes(4).toString("hex")}`);
    const run = new ChrootRun(dir, []);
    try {
      for (const [i, v] of versions.entries()) {
        const { dir: lower, nixVersion } = built[i]!;
        const layer = join(dir, v.suite);
        const root = join(layer, "root");
        for (const d of ["upper", "work", "root"]) await mkdir(join(layer, d), { recursive: true });
        await runOk("mount", ["-t", "overlay", "overlay", "-o", `lowerdir=${lower},upperdir=${join(layer, "upper")},workdir=${join(layer, "work")}`, root]);
        run.chroots.push({ name: v.name, suite: v.suite, nixVersion, root });
        await runOk("mount", ["-t", "proc", "proc", join(root, "proc")]);
        await mountDev(join(root, "dev"));
        const checkout = join(root, PROJECT_ROOT);
        await mkdir(checkout, { recursive: true });
        await runOk("mount", ["--bind", PROJECT_ROOT, checkout]);
        await runOk("mount", ["-o", "remount,bind,ro", checkout]);
      }
    } catch (err) {
      await run.unmount();
      throw err;
    }
    return run;
  }

  async unmount(): Promise<void> {
    await unmountUnder(this.dir);
    if (!(await mountPoints()).some((p) => p.startsWith(`${this.dir}/`))) await rm(this.dir, { recursive: true, force: true });
  }
}

/** Whether this machine can build and mount the chroots at all (root, mmdebstrap, overlayfs). */
export async function matrixPrerequisites(): Promise<string | null> {
  if (process.getuid?.() !== 0) return "the Nix version matrix needs root (mmdebstrap, chroot, mount)";
  if (!existsSync("/usr/bin/mmdebstrap")) return "mmdebstrap is not installed (test/install-system-deps.sh installs it)";
  const fs = await readFile("/proc/filesystems", "utf8");
  if (!/\toverlay$/m.test(fs)) return "the kernel has no overlay filesystem";
  return null;
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === new URL(import.meta.url).pathname && process.argv[2] === "build") {
  const problem = await matrixPrerequisites();
  if (problem !== null) {
    console.error(`error: ${problem}`);
    process.exit(1);
  }
  const built = await ensureAll(NIX_VERSIONS, (l) => console.error(l));
  for (const [i, v] of NIX_VERSIONS.entries()) {
    const { dir, nixVersion } = built[i]!;
    const size = (await runOk("du", ["-sh", dir])).split("\t")[0];
    console.log(`${v.name.padEnd(5)} ${v.suite.padEnd(9)} Nix ${nixVersion.padEnd(8)} ${size}  ${dir}`);
  }
}
