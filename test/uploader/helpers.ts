// Test helpers for the uploader: a private single-user Nix 2.8 configuration, real store
// paths made with `nix-store --add` and `nix-build` (no nixpkgs needed), and running
// programs to completion.
//
// Nix runs with its own NIX_CONF_DIR (the settings of NIX-CLIENT.md §2.2: no sandbox,
// build as root, nix-command on, no substituters) and a fresh XDG_CACHE_HOME, so the
// host's /etc/nix is never touched. Store paths are written to the real /nix/store;
// random salts keep each run's paths new.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const PROJECT_ROOT = resolve(new URL("../..", import.meta.url).pathname);
export const CLI = join(PROJECT_ROOT, "uploader", "cli.ts");

const NIX_CONF = `sandbox = false
build-users-group =
experimental-features = nix-command
substituters =
`;

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program to completion; never throws on a non-zero exit. */
export function run(cmd: string, args: readonly string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<RunResult> {
  return new Promise((done) => {
    execFile(cmd, args, { env: options.env ?? process.env, cwd: options.cwd, maxBuffer: 256 << 20, encoding: "utf8" }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      done({ code, stdout, stderr });
    });
  });
}

/** Like run, but throws with the output when the program fails; returns stdout. */
export async function runOk(cmd: string, args: readonly string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<string> {
  const r = await run(cmd, args, options);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${r.code}):\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** A scratch directory with a private Nix configuration. */
export class NixSandbox {
  readonly dir: string;
  readonly env: NodeJS.ProcessEnv;

  private constructor(dir: string) {
    this.dir = dir;
    // XDG_CONFIG_HOME too: the uploader must not read the user's own `uploader login` file.
    this.env = { ...process.env, NIX_CONF_DIR: join(dir, "nix-conf"), XDG_CACHE_HOME: join(dir, "xdg"), XDG_CONFIG_HOME: join(dir, "config") };
    delete this.env.NIX_CACHE_CONFIG;
  }

  static async create(): Promise<NixSandbox> {
    const dir = await mkdtemp(join(tmpdir(), "nec-uploader-"));
    const sandbox = new NixSandbox(dir);
    await mkdir(join(dir, "nix-conf"), { recursive: true });
    await writeFile(join(dir, "nix-conf", "nix.conf"), NIX_CONF);
    return sandbox;
  }

  /** A fresh subdirectory of the scratch directory. */
  async tempDir(prefix = "t-"): Promise<string> {
    return mkdtemp(join(this.dir, prefix));
  }

  nixStore(args: readonly string[]): Promise<string> {
    return runOk("nix-store", args, { env: this.env });
  }

  nix(args: readonly string[]): Promise<string> {
    return runOk("nix", args, { env: this.env });
  }

  /** `nix-store --add` of a file or directory; returns the store path. */
  async add(path: string): Promise<string> {
    return (await this.nixStore(["--add", path])).trim();
  }

  /** Adds a small file with unique contents to the store. */
  async addText(name: string, text = ""): Promise<string> {
    const dir = await this.tempDir();
    const file = join(dir, name);
    await writeFile(file, `${text}${randomBytes(8).toString("hex")}\n`);
    return this.add(file);
  }

  /** A fresh 3-path closure (see `buildClosure`). */
  async buildClosure(): Promise<Closure> {
    return buildClosure(this.env, await this.tempDir("closure-"));
  }

  async cleanup(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}

export interface Closure {
  /** a directory with an executable, a relative symlink and an empty file (nix-store --add) */
  tree: string;
  /** a derivation output with no references */
  dep: string;
  /** references dep and tree; has an executable, a symlink into dep and text naming both */
  top: string;
  /** top's derivation */
  drv: string;
}

/**
 * Builds a fresh 3-path closure in the real store without nixpkgs: builders are the
 * host's /bin/sh, and a random salt makes every call produce new store paths. `env` is a
 * Nix environment with a private NIX_CONF_DIR; `work` a scratch directory.
 */
export async function buildClosure(env: NodeJS.ProcessEnv, work: string): Promise<Closure> {
  const salt = randomBytes(8).toString("hex");
  const tree = join(work, "tree");
  await mkdir(join(tree, "bin"), { recursive: true });
  await mkdir(join(tree, "share"), { recursive: true });
  await writeFile(join(tree, "bin", "hello"), "#!/bin/sh\necho hi\n");
  await chmod(join(tree, "bin", "hello"), 0o755);
  await writeFile(join(tree, "share", "data.txt"), `data ${salt}\n`);
  await writeFile(join(tree, "share", "empty"), "");
  await symlink("../share/data.txt", join(tree, "bin", "link-to-data"));
  const treePath = (await runOk("nix-store", ["--add", tree], { env })).trim();
  const expr = `
let
  # storePath gives the string the store path's context, so top references it.
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
    /bin/mkdir -p $out/bin
    echo "dep is \${dep}" > $out/refs.txt
    echo "tree is \${tree}" >> $out/refs.txt
    printf '#!/bin/sh\\n/bin/cat \${dep}\\n' > $out/bin/show
    /bin/chmod +x $out/bin/show
    /bin/ln -s \${dep} $out/dep-link
  '' ];
}`;
  await writeFile(join(work, "closure.nix"), expr);
  const top = (await runOk("nix-build", [join(work, "closure.nix"), "--no-out-link"], { env })).trim();
  const refs = (await runOk("nix-store", ["-q", "--references", top], { env })).trim().split("\n");
  const dep = refs.find((r) => r.endsWith("-nec-test-dep"));
  if (!dep || !refs.includes(treePath)) throw new Error(`unexpected references of ${top}: ${refs.join(" ")}`);
  const drv = (await runOk("nix-store", ["-q", "--deriver", top], { env })).trim();
  return { tree: treePath, dep, top, drv };
}
