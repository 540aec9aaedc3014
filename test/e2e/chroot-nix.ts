// A real Nix of one version, run inside its mounted chroot (nix-versions.ts), as the
// end-to-end matrix uses it: the same helpers as NixClient in harness.ts, for any version.
//
// Paths given to and printed by Nix are paths inside the chroot; `host(p)` is where the
// test process (outside) finds them. Every command runs as `chroot <root> env -i …`, so
// nothing of the host's environment leaks in, with a private NIX_CONF_DIR (the settings of
// NIX-CLIENT.md §2.2) and, unless a test asks for one to be kept, a fresh XDG_CACHE_HOME,
// so Nix's narinfo disk cache cannot hide requests from the Worker.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { inject } from "vitest";
import { chrootEnv, type MountedChroot } from "./nix-versions.ts";
import type { MatrixState } from "./nix-versions.setup.ts";
import { PROJECT_ROOT, type Closure, type RunResult } from "./harness.ts";

/** Settings every Nix command in the matrix runs with, unless a test writes its own. */
export const MATRIX_NIX_CONF = `sandbox = false
build-users-group =
experimental-features = nix-command
substituters =
narinfo-cache-negative-ttl = 0
download-attempts = 1
stalled-download-timeout = 10
`;

/** The pinned Node, as seen inside a chroot (the checkout is mounted at its own path). */
export const CHROOT_NODE = join(PROJECT_ROOT, "node_modules", "node", "bin", "node");
export const CHROOT_CLI = join(PROJECT_ROOT, "uploader", "cli.ts");

export interface RunOptions {
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** XDG_CACHE_HOME to use (inside path); a fresh one when absent. */
  xdg?: string;
  /** NIX_CONF_DIR to use (inside path); the client's own when absent. */
  confDir?: string;
}

export class ChrootNix {
  readonly chroot: MountedChroot;
  /** Scratch directory, inside path. */
  readonly dir: string;
  readonly confDir: string;

  private constructor(chroot: MountedChroot, dir: string) {
    this.chroot = chroot;
    this.dir = dir;
    this.confDir = join(dir, "nix-conf");
  }

  static async create(chroot: MountedChroot, conf: string = MATRIX_NIX_CONF): Promise<ChrootNix> {
    await mkdir(join(chroot.root, "tmp"), { recursive: true });
    const hostDir = await mkdtemp(join(chroot.root, "tmp", "nec-"));
    const nix = new ChrootNix(chroot, hostDir.slice(chroot.root.length));
    await mkdir(nix.host(nix.confDir), { recursive: true });
    await writeFile(nix.host(join(nix.confDir, "nix.conf")), conf);
    return nix;
  }

  get name(): string {
    return this.chroot.name;
  }

  /** Where the test process finds an inside path. */
  host(insidePath: string): string {
    return join(this.chroot.root, insidePath);
  }

  /** A fresh directory, inside path. */
  async tempDir(prefix = "t-"): Promise<string> {
    return (await mkdtemp(this.host(join(this.dir, prefix)))).slice(this.chroot.root.length);
  }

  async writeFile(insidePath: string, content: string | Uint8Array, mode?: number): Promise<string> {
    await writeFile(this.host(insidePath), content, mode === undefined ? {} : { mode });
    return insidePath;
  }

  readFile(insidePath: string): Promise<string> {
    return readFile(this.host(insidePath), "utf8");
  }

  /** A private Nix configuration directory with `conf` as its nix.conf; inside path. */
  async confWith(conf: string): Promise<string> {
    const dir = await this.tempDir("conf-");
    await this.writeFile(join(dir, "nix.conf"), conf);
    return dir;
  }

  async run(cmd: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    const env = chrootEnv({
      NIX_CONF_DIR: options.confDir ?? this.confDir,
      XDG_CACHE_HOME: options.xdg ?? (await this.tempDir("xdg-")),
      ...options.env,
    });
    const pairs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
    return new Promise((done) => {
      execFile("chroot", [this.chroot.root, "/usr/bin/env", "-i", ...pairs, cmd, ...args], { maxBuffer: 256 << 20, encoding: "utf8" }, (err, stdout, stderr) => {
        done({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr });
      });
    });
  }

  async runOk(cmd: string, args: readonly string[], options: RunOptions = {}): Promise<string> {
    const r = await this.run(cmd, args, options);
    if (r.code !== 0) throw new Error(`[Nix ${this.name}] ${cmd} ${args.join(" ")} failed (${r.code}):\n${r.stderr}${r.stdout}`);
    return r.stdout;
  }

  nix(args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    return this.run("nix", args, options);
  }

  nixOk(args: readonly string[], options: RunOptions = {}): Promise<string> {
    return this.runOk("nix", args, options);
  }

  nixStore(args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    return this.run("nix-store", args, options);
  }

  /** `uploader push` (or any uploader command) run inside the chroot with the pinned Node. */
  uploader(args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    return this.run(CHROOT_NODE, [CHROOT_CLI, ...args], options);
  }

  async netrc(token: string): Promise<string> {
    return this.writeFile(join(this.dir, `netrc-${randomBytes(4).toString("hex")}`), `machine 127.0.0.1 login nix password ${token}\n`, 0o600);
  }

  /** An empty directory to use as a second store (`--store <dir>`); inside path. */
  emptyStore(): Promise<string> {
    return this.tempDir("store-");
  }

  /**
   * The sha256 of the NAR serialisation of a path in `store` (a `--store` directory) or in
   * the chroot's own store: equal hashes, equal trees. It dumps the file-system path
   * (`<store>/nix/store/…`) rather than asking `nix-store --store <dir> --dump`, which on
   * Nix 2.26 writes only the NAR header for a path of such a store.
   */
  async dumpHash(path: string, store?: string): Promise<string> {
    const out = join(await this.tempDir("dump-"), "nar");
    await this.runOk("/bin/sh", ["-c", `nix-store --dump '${store ?? ""}${path}' > '${out}'`]);
    return (await this.runOk("sha256sum", [out])).split(" ")[0]!;
  }

  /** Adds a small file with unique contents to the store; returns the store path. */
  async addText(name: string, text = ""): Promise<string> {
    const file = join(await this.tempDir(), name);
    await this.writeFile(file, `${text}${randomBytes(8).toString("hex")}\n`);
    return (await this.runOk("nix-store", ["--add", file])).trim();
  }

  /**
   * Builds a fresh one-file derivation output: an input-addressed path, which (unlike the
   * content-addressed paths of addText) a client accepts only with a trusted signature.
   * Its build log says `building <name>`.
   */
  async buildText(name: string, text = ""): Promise<string> {
    const file = join(await this.tempDir("drv-"), "default.nix");
    const content = `${text}${randomBytes(8).toString("hex")}`.replace(/[^A-Za-z0-9 ._-]/g, "_");
    await this.writeFile(
      file,
      `builtins.derivation { name = "${name}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo 'building ${name}'; echo '${content}' > $out" ]; }`,
    );
    return (await this.runOk("nix-build", [file, "--no-out-link"])).trim();
  }

  /**
   * A fresh 3-path closure in the chroot's store (the shape of buildClosure in the
   * uploader helpers): a tree with an executable and a symlink, a derivation output with
   * no references, and one referring to both, with a deriver whose build log exists.
   */
  async buildClosure(): Promise<Closure> {
    const work = await this.tempDir("closure-");
    const salt = randomBytes(8).toString("hex");
    const tree = this.host(join(work, "tree"));
    await mkdir(join(tree, "bin"), { recursive: true });
    await mkdir(join(tree, "share"), { recursive: true });
    await writeFile(join(tree, "bin", "hello"), "#!/bin/sh\necho hi\n");
    await chmod(join(tree, "bin", "hello"), 0o755);
    await writeFile(join(tree, "share", "data.txt"), `data ${salt}\n`);
    await writeFile(join(tree, "share", "empty"), "");
    await symlink("../share/data.txt", join(tree, "bin", "link-to-data"));
    const treePath = (await this.runOk("nix-store", ["--add", join(work, "tree")])).trim();
    const expr = `
let
  tree = builtins.storePath "${treePath}";
  dep = builtins.derivation {
    name = "nec-test-dep";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo 'I am a dependency ${salt}' > $out" ];
  };
in builtins.derivation {
  name = "nec-test-top";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" ''
    echo "building top ${salt}"
    /bin/mkdir -p $out/bin
    echo "dep is \${dep}" > $out/refs.txt
    echo "tree is \${tree}" >> $out/refs.txt
    printf '#!/bin/sh\\n/bin/cat \${dep}\\n' > $out/bin/show
    /bin/chmod +x $out/bin/show
    /bin/ln -s \${dep} $out/dep-link
  '' ];
}`;
    await this.writeFile(join(work, "closure.nix"), expr);
    const top = (await this.runOk("nix-build", [join(work, "closure.nix"), "--no-out-link"])).trim();
    const refs = (await this.runOk("nix-store", ["-q", "--references", top])).trim().split("\n");
    const dep = refs.find((r) => r.endsWith("-nec-test-dep"));
    if (!dep || !refs.includes(treePath)) throw new Error(`unexpected references of ${top}: ${refs.join(" ")}`);
    const drv = (await this.runOk("nix-store", ["-q", "--deriver", top])).trim();
    return { tree: treePath, dep, top, drv };
  }

  async cleanup(): Promise<void> {
    await rm(this.host(this.dir), { recursive: true, force: true });
  }
}

/** How long a matrix test file waits for the chroots: a first build takes a few minutes. */
const MATRIX_WAIT_MS = 20 * 60 * 1000;

/**
 * The chroots of this run, once the matrix's globalSetup has mounted them (it builds and
 * mounts while the host's tests run); throws its error when that failed.
 */
export async function matrixChroots(): Promise<MountedChroot[]> {
  const file = inject("nixMatrixState");
  const deadline = Date.now() + MATRIX_WAIT_MS;
  for (;;) {
    let text: string | null = null;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    if (text !== null) {
      const state = JSON.parse(text) as MatrixState;
      if ("error" in state) throw new Error(`the Nix version matrix could not be set up:\n${state.error}`);
      return state.chroots;
    }
    if (Date.now() > deadline) throw new Error(`the Nix version matrix was not ready after ${MATRIX_WAIT_MS / 60_000} minutes`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

export function hashPart(storePath: string): string {
  return storePath.slice("/nix/store/".length, "/nix/store/".length + 32);
}
