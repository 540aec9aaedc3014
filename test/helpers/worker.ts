// Helpers for Worker tests inside workerd: calling the Worker (as deployed, or with other
// settings), credentials, snapshots of the real local R2 bucket, and real NAR / narinfo
// bytes built with the core.

import { env, exports } from "cloudflare:workers";
import { applyD1Migrations, createExecutionContext, reset, waitOnExecutionContext, type D1Migration } from "cloudflare:test";
import { createApp } from "../../src/app.ts";
import type { WorkerEnv } from "../../src/env.ts";
import { fromHex, toBase64, utf8 } from "../../src/nix/encoding.ts";
import { formatSha256, sha256 } from "../../src/nix/hash.ts";
import { encodeNix32 } from "../../src/nix/nix32.ts";
import { serializeNar } from "../../src/nix/nar-writer.ts";
import { formatNarInfo, type NarInfo } from "../../src/nix/narinfo.ts";
import { parsePublicKey, parseSecretKey, signNarInfo, withSignature, type SecretKey } from "../../src/nix/signature.ts";
import { TEST_SECOND_WRITE_TOKEN, TEST_WRITE_TOKEN } from "../worker-test-bindings.ts";
import testSecretKey from "../fixtures/keys/test-cache-1.secret?raw";
import testPublicKey from "../fixtures/keys/test-cache-1.public?raw";
import otherSecretKey from "../fixtures/keys/test-other-1.secret?raw";
import otherPublicKey from "../fixtures/keys/test-other-1.public?raw";
import vectorsText from "../fixtures/vectors.json?raw";

export { TEST_SECOND_WRITE_TOKEN, TEST_WRITE_TOKEN };

/** Gives the D1 index its schema (migrations/), unless it has it. */
export async function migrate(): Promise<void> {
  await applyD1Migrations(env.DB, (env as unknown as { TEST_MIGRATIONS: D1Migration[] }).TEST_MIGRATIONS);
}

/** Empties every binding (R2 and D1), then gives the index its schema again. */
export async function resetAll(): Promise<void> {
  await reset();
  await migrate();
}

/** Loopback origin: the Worker skips its edge cache here, so R2 is what tests observe. */
export const ORIGIN = "http://localhost";

export const TEST_KEY_TEXT = testSecretKey;
export const TEST_PUBLIC_KEY_TEXT = testPublicKey;
export const OTHER_KEY_TEXT = otherSecretKey;
export const OTHER_PUBLIC_KEY_TEXT = otherPublicKey;
export const TEST_KEY: SecretKey = parseSecretKey(testSecretKey);
export const OTHER_KEY: SecretKey = parseSecretKey(otherSecretKey);
export const TEST_PUBLIC_KEY = parsePublicKey(testPublicKey);

export function bearer(token: string = TEST_WRITE_TOKEN): Record<string, string> {
  return { Authorization: `Bearer ${token}` };
}

/** HTTP Basic as Nix sends it from a netrc entry (`login <user> password <token>`). */
export function basic(token: string, user = "nix"): Record<string, string> {
  return { Authorization: `Basic ${toBase64(utf8(`${user}:${token}`))}` };
}

/** Calls the Worker as deployed (default export, test bindings). */
export function call(path: string, init?: RequestInit): Promise<Response> {
  return exports.default.fetch(new Request(ORIGIN + path, init));
}

/**
 * Calls a fresh app with the test bindings plus `overrides` (other settings). The request
 * does not cross an HTTP hop, so Content-Length is set here the way a client would.
 */
export async function callWith(overrides: Partial<Record<string, string>>, url: string, init: RequestInit = {}): Promise<Response> {
  const ctx = createExecutionContext();
  const full = url.startsWith("http") ? url : ORIGIN + url;
  const headers = new Headers(init.headers);
  const body = init.body;
  if (!headers.has("Content-Length") && (typeof body === "string" || body instanceof Uint8Array)) {
    headers.set("Content-Length", String(typeof body === "string" ? utf8(body).length : body.length));
  }
  const response = await createApp().fetch(new Request(full, { ...init, headers }), { ...env, ...overrides } as WorkerEnv, ctx);
  await waitOnExecutionContext(ctx);
  return response;
}

/** Every key in the bucket with its etag, sorted: equal snapshots mean an unchanged bucket. */
export async function snapshot(): Promise<string[]> {
  const out: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await env.CACHE.list(cursor === undefined ? {} : { cursor });
    for (const o of page.objects) out.push(`${o.key} ${o.etag}`);
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor !== undefined);
  return out.sort();
}

/** Keys only. */
export async function keys(): Promise<string[]> {
  return (await snapshot()).map((line) => line.split(" ")[0]!);
}

export async function bytesOf(response: Response): Promise<Uint8Array> {
  return new Uint8Array(await response.arrayBuffer());
}

interface NarVector {
  label: string;
  narSize: number;
  narHash: string;
  hex: string;
}

/** The NARs of reference/vectors.json: real bytes, identical to `nix-store --dump`. */
export const NAR_VECTORS: ReadonlyArray<{ label: string; narSize: number; narHash: string; bytes: Uint8Array }> = (
  JSON.parse(vectorsText) as { nar: NarVector[] }
).nar.map((v) => ({ label: v.label, narSize: v.narSize, narHash: v.narHash, bytes: fromHex(v.hex) }));

/** A store path ready to upload: its NAR file, and its narinfo (unsigned). */
export interface TestPath {
  hash: string;
  baseName: string;
  storePath: string;
  nar: Uint8Array;
  /** The file stored under nar/: the NAR, compressed or not. */
  file: Uint8Array;
  fileName: string;
  info: NarInfo;
}

async function gzip(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

export interface PathOptions {
  /** Uncompressed NAR bytes (default: a NAR of a regular file holding a text from the name). */
  nar?: Uint8Array;
  references?: readonly TestPath[];
  /** Also list the path itself among its references. */
  selfReference?: boolean;
  /** "none" (file = NAR, `.nar`) or "gzip" (real gzip, also `.nar`, as Nix names it). */
  compression?: "none" | "gzip";
}

/** A store path named `name` whose hash part is derived from the name (stable per test). */
export async function testPath(name: string, opts: PathOptions = {}): Promise<TestPath> {
  const hash = encodeNix32((await sha256(utf8(`test path ${name}`))).slice(0, 20));
  const baseName = `${hash}-${name}`;
  const storePath = `/nix/store/${baseName}`;
  const nar = opts.nar ?? (await serializeNar({ type: "regular", contents: utf8(`contents of ${name}\n`) }));
  const compression = opts.compression ?? "none";
  const file = compression === "gzip" ? await gzip(nar) : nar;
  const fileDigest = await sha256(file);
  const fileName = `${encodeNix32(fileDigest)}.nar`;
  const references = (opts.references ?? []).map((r) => r.baseName);
  if (opts.selfReference === true) references.push(baseName);
  references.sort();
  const info: NarInfo = {
    storePath,
    url: `nar/${fileName}`,
    compression,
    fileHash: formatSha256(fileDigest),
    fileSize: file.length,
    narHash: formatSha256(await sha256(nar)),
    narSize: nar.length,
    references,
    sigs: [],
    extra: [],
  };
  return { hash, baseName, storePath, nar, file, fileName, info };
}

/** The narinfo signed by `key` (default: the test key). */
export async function signed(info: NarInfo, key: SecretKey = TEST_KEY): Promise<NarInfo> {
  return withSignature(info, await signNarInfo(info, key));
}

export function putNar(p: TestPath, headers: Record<string, string> = bearer()): Promise<Response> {
  return call(`/nar/${p.fileName}`, {
    method: "PUT",
    body: p.file,
    headers: { "Content-Type": "application/x-nix-nar", ...headers },
  });
}

export function putNarInfo(hash: string, text: string, headers: Record<string, string> = bearer()): Promise<Response> {
  return call(`/${hash}.narinfo`, {
    method: "PUT",
    body: text,
    headers: { "Content-Type": "text/x-nix-narinfo", ...headers },
  });
}

/** Uploads a path the way Nix does: NAR first, then its narinfo. */
export async function push(p: TestPath, info: NarInfo = p.info): Promise<void> {
  const n = await putNar(p);
  if (n.status !== 201 && n.status !== 204) throw new Error(`NAR upload failed: ${n.status} ${await n.text()}`);
  const i = await putNarInfo(p.hash, formatNarInfo(info));
  if (i.status !== 201 && i.status !== 204) throw new Error(`narinfo upload failed: ${i.status} ${await i.text()}`);
}

export async function errorOf(response: Response): Promise<string> {
  const body = (await response.json()) as { error?: unknown };
  return String(body.error);
}
