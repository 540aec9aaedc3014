// Real servers that hold the caches `uploader import` reads in its tests: nginx (Debian's)
// serving a binary cache directory over HTTP, as an S3/MinIO bucket with anonymous
// download does, and an S3 API (the npm package @20minutes/s3rver, which checks SigV4
// signatures against its accounts) holding a bucket written through the S3 API with the
// layout `nix copy --to s3://` produces.
import { spawn, type ChildProcess } from "node:child_process";
import { createRequire } from "node:module";
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { AwsClient } from "aws4fetch";
import { freePort } from "./harness.ts";
import { runOk } from "../uploader/helpers.ts";

/**
 * nginx serving `root` on a free loopback port, with its own prefix, config and PID, set
 * up to serve files fast (sendfile, long keep-alive): the import tests' plain HTTP cache
 * and bench/serve.ts's reference server.
 */
export class Nginx {
  readonly url: string;
  readonly #child: ChildProcess;
  readonly #dir: string;

  private constructor(url: string, child: ChildProcess, dir: string) {
    this.url = url;
    this.#child = child;
    this.#dir = dir;
  }

  static async start(root: string): Promise<Nginx> {
    const dir = await mkdtemp(join(tmpdir(), "nec-nginx-"));
    const port = await freePort();
    for (const sub of ["tmp", "logs"]) await mkdir(join(dir, sub), { recursive: true });
    // Worker processes run as an unprivileged user: the files must be readable by others.
    await runOk("chmod", ["-R", "a+rX", root]);
    await runOk("chmod", ["a+x", ...ancestors(root)]);
    const conf = `worker_processes auto;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  types { text/x-nix-narinfo narinfo; }
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:${port};
    root ${root};
  }
}
`;
    await writeFile(join(dir, "nginx.conf"), conf);
    const child = spawn("/usr/sbin/nginx", ["-c", join(dir, "nginx.conf"), "-p", dir], { stdio: ["ignore", "ignore", "pipe"], detached: true });
    let stderr = "";
    child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
    const url = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`nginx exited (${child.exitCode}): ${stderr}`);
      try {
        if ((await fetch(`${url}/nix-cache-info`)).status === 200) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`nginx did not come up: ${stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    return new Nginx(url, child, dir);
  }

  async stop(): Promise<void> {
    if (this.#child.pid && this.#child.exitCode === null) {
      const exited = new Promise((r) => this.#child.once("exit", r));
      process.kill(-this.#child.pid, "SIGTERM");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    }
    await rm(this.#dir, { recursive: true, force: true });
  }
}

/** The directories above `path`, which nginx's worker must be able to traverse. */
function ancestors(path: string): string[] {
  const out: string[] = [];
  let p = path;
  while (p !== "/" && p !== "") {
    p = p.slice(0, p.lastIndexOf("/")) || "/";
    if (p !== "/") out.push(p);
  }
  return out;
}

interface S3rverInstance {
  run(): Promise<{ address: string; port: number }>;
  close(): Promise<void>;
}
type S3rverClass = new (options: Record<string, unknown>) => S3rverInstance;

/** s3rver's built-in account: the only credentials it accepts. */
export const S3_ACCESS_KEY_ID = "S3RVER";
export const S3_SECRET_ACCESS_KEY = "S3RVER";
export const S3_REGION = "eu-central-1";

/** A local S3 API with one bucket, on a free loopback port. */
export class S3Server {
  readonly endpoint: string;
  readonly bucket: string;
  readonly #server: S3rverInstance;
  readonly #dir: string;
  readonly #client: AwsClient;

  private constructor(endpoint: string, bucket: string, server: S3rverInstance, dir: string) {
    this.endpoint = endpoint;
    this.bucket = bucket;
    this.#server = server;
    this.#dir = dir;
    this.#client = new AwsClient({ accessKeyId: S3_ACCESS_KEY_ID, secretAccessKey: S3_SECRET_ACCESS_KEY, service: "s3", region: S3_REGION, retries: 0 });
  }

  static async start(bucket: string): Promise<S3Server> {
    const S3rver = createRequire(import.meta.url)("@20minutes/s3rver") as S3rverClass;
    const dir = await mkdtemp(join(tmpdir(), "nec-s3-"));
    const server = new S3rver({ address: "127.0.0.1", port: 0, silent: true, directory: dir, configureBuckets: [{ name: bucket }] });
    const { port } = await server.run();
    return new S3Server(`http://127.0.0.1:${port}`, bucket, server, dir);
  }

  /** PUTs one object through the S3 API, signed, with the headers Nix's S3 store sends. */
  async put(key: string, body: Uint8Array, contentType: string): Promise<void> {
    const res = await this.#client.fetch(`${this.endpoint}/${this.bucket}/${key}`, { method: "PUT", body, headers: { "content-type": contentType } });
    if (res.status !== 200) throw new Error(`PUT ${key}: HTTP ${res.status}: ${await res.text()}`);
  }

  /**
   * Uploads a binary cache directory written by `nix copy --to file://…` with the object
   * keys and content types `nix copy --to s3://` uses: nix-cache-info and `<hash>.narinfo`
   * at the bucket's root, NARs under `nar/`.
   */
  async uploadCacheDirectory(dir: string): Promise<string[]> {
    const keys: string[] = [];
    const walk = async (d: string): Promise<void> => {
      for (const entry of await readdir(d, { withFileTypes: true })) {
        const p = join(d, entry.name);
        if (entry.isDirectory()) await walk(p);
        else keys.push(relative(dir, p));
      }
    };
    await walk(dir);
    for (const key of keys.sort()) {
      const type = key.endsWith(".narinfo") ? "text/x-nix-narinfo" : key === "nix-cache-info" ? "text/x-nix-cache-info" : "application/x-nix-nar";
      await this.put(key, await readFile(join(dir, key)), type);
    }
    return keys;
  }

  async stop(): Promise<void> {
    await this.#server.close();
    await rm(this.#dir, { recursive: true, force: true });
  }
}
