// Model-based adversarial test: an honest writer and a hostile one, each with its own write
// token, take turns in random order against the Worker and the real local R2 bucket, with
// an admin pinning paths and collecting garbage in between. After every step the bucket is
// checked against the invariants of "Integrity against every writer":
//
//   1. immutable paths: a stored narinfo keeps every field but its signatures until
//      retention deletes it; signatures are only ever added, at most MAX_SIGNATURES, one
//      per key name, and the document stays within what the Worker parses;
//   2. immutable, verified NARs: every nar/ object hashes to the sha256 in its name (also
//      when it came in parts) and its bytes never change while it exists;
//   3. no holes: every reference of a stored narinfo is stored as that exact store path,
//      and its NAR is stored with FileSize bytes;
//   4. retention keeps every pinned closure; a collection of young paths deletes no path;
//   5. the Worker's signature is on every stored narinfo and verifies;
//   6. uploads belong to who started them: the honest writer's multipart upload completes
//      whatever the other token did to it, and its push is never refused because of it;
//   7. the D1 index never has a row whose narinfo object is missing, and a row's facts are
//      the stored narinfo's (store path, NAR, sizes, references);
//   and every answer to anyone is below 500.
//
// The hostile token tries: replacing published paths with other content, merging huge or
// many or forged signatures, narinfos whose references name a stored hash part with another
// name, starting, filling, completing and aborting multipart uploads for the honest NAR's
// name with garbage, touching the honest upload by its id, and pins and collections, which
// its token may not do.
import { env } from "cloudflare:workers";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { toBase64, toHex, utf8 } from "../../src/nix/encoding.ts";
import { sha256 } from "../../src/nix/hash.ts";
import { decodeNix32 } from "../../src/nix/nix32.ts";
import { serializeNar } from "../../src/nix/nar-writer.ts";
import { formatNarInfo, MAX_NARINFO_LENGTH, parseNarInfo, type NarInfo } from "../../src/nix/narinfo.ts";
import { signNarInfo, verifyNarInfo } from "../../src/nix/signature.ts";
import { MAX_SIGNATURES, keyNameOf } from "../../src/ingest/signatures.ts";
import { bearer, callWith, OTHER_KEY, TEST_KEY, TEST_KEY_TEXT, TEST_PUBLIC_KEY, TEST_SECOND_WRITE_TOKEN, testPath, type TestPath, resetAll } from "../helpers/worker.ts";
import { collect, DAY_MS, gcSettings, TestClock } from "../helpers/gc.ts";

const ADMIN_TOKEN = "adversary-admin-token";
/** Parts of 5 MiB (R2's minimum) under a 6 MiB request limit: the big path needs two. */
const PART_BYTES = 5 * 1024 * 1024;
const SETTINGS = { SIGNING_KEY: TEST_KEY_TEXT, ADMIN_TOKEN, MAX_NAR_UPLOAD_BYTES: String(6 * 1024 * 1024) };
/** Runs of random command sequences in CI (each up to MAX_COMMANDS steps). */
const RUNS = 300;
const MAX_COMMANDS = 24;

const HONEST = bearer();
const HOSTILE = bearer(TEST_SECOND_WRITE_TOKEN);
const ADMIN = bearer(ADMIN_TOKEN);

type Who = "honest" | "hostile";

/** Deterministic pseudo-random bytes (crypto.getRandomValues takes 64 KiB at most per call). */
function noise(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

interface Universe {
  /** The honest writer's paths; small[i] references only earlier ones. */
  small: TestPath[];
  /** A path whose NAR needs a multipart upload; it references small[0]. */
  big: TestPath;
  /** For each honest path, one with the same store path and other contents. */
  evil: Map<string, TestPath>;
  /** A multipart body as long as the big NAR, which hashes to something else. */
  garbage: Uint8Array;
  /** The hostile token's own path, referencing small[0] as `<hash>-<another name>`. */
  misnamed: TestPath;
  /** The hostile token's own honest-looking path (adding paths is allowed). */
  extra: TestPath;
}

async function universe(): Promise<Universe> {
  const h0 = await testPath("adv-zero");
  const h1 = await testPath("adv-one", { references: [h0] });
  const h2 = await testPath("adv-two", { references: [h1] });
  const h3 = await testPath("adv-three", { references: [h0, h2], selfReference: true });
  const h4 = await testPath("adv-four");
  const small = [h0, h1, h2, h3, h4];
  const bigNar = await serializeNar({ type: "regular", contents: noise(PART_BYTES + 2 * 1024 * 1024, 42) });
  const big = await testPath("adv-big", { nar: bigNar, references: [h0] });
  const evil = new Map<string, TestPath>();
  for (const p of [...small, big]) {
    const name = p.baseName.slice(33);
    const other = await serializeNar({ type: "regular", contents: utf8(`not what ${name} holds\n`) });
    evil.set(p.hash, await testPath(name, { nar: other }));
  }
  const extra = await testPath("adv-extra", { references: [h0] });
  const misnamedBase = await testPath("adv-misnamed");
  const misnamed: TestPath = { ...misnamedBase, info: { ...misnamedBase.info, references: [`${h0.hash}-adv-impostor`] } };
  return { small, big, evil, garbage: noise(big.file.length, 7), misnamed, extra };
}

/** What the model knows: which uploads are in progress and what is pinned. */
interface Model {
  honestUpload: { uploadId: string; partCount: number; sent: Set<number> } | null;
  hostileUpload: { uploadId: string; partCount: number } | null;
  pins: Map<string, string>;
}

/** What was seen in the bucket so far, to check that nothing published changes. */
interface Observed {
  narinfos: Map<string, { identity: string; sigs: string[] }>;
  nars: Map<string, string>;
}

interface Real {
  u: Universe;
  seen: Observed;
  log: string[];
  /** The collections' clock: it only moves forward, as time does. */
  clock: TestClock;
}

function call(path: string, init: RequestInit = {}): Promise<Response> {
  return callWith(SETTINGS, path, init);
}

async function answer(real: Real, what: string, res: Response): Promise<{ status: number; body: string }> {
  const body = await res.text();
  real.log.push(`${what} → ${res.status} ${body.slice(0, 200)}`);
  expect(res.status, `${what}: ${body}`).toBeLessThan(500);
  return { status: res.status, body };
}

async function listAll(): Promise<R2Object[]> {
  const out: R2Object[] = [];
  let cursor: string | undefined;
  do {
    const page = await env.CACHE.list({ ...(cursor === undefined ? {} : { cursor }), include: ["customMetadata"] });
    out.push(...page.objects);
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor !== undefined);
  return out;
}

const NARINFO_KEY = /^[0-9a-df-np-sv-z]{32}\.narinfo$/;
const NAR_KEY = /^nar\/([0-9a-df-np-sv-z]{52})\.nar(\.[a-z0-9]+)?$/;

/** The stored narinfos, parsed, by hash part. */
async function storedNarInfos(): Promise<Map<string, NarInfo>> {
  const out = new Map<string, NarInfo>();
  for (const o of await listAll()) {
    if (!NARINFO_KEY.test(o.key)) continue;
    const text = await (await env.CACHE.get(o.key))!.text();
    out.set(o.key.slice(0, 32), parseNarInfo(text));
  }
  return out;
}

/** Hash parts in the closures of `roots` over the stored narinfos. */
function closure(roots: Iterable<string>, infos: Map<string, NarInfo>): Set<string> {
  const out = new Set<string>();
  const todo = [...roots];
  while (todo.length > 0) {
    const hash = todo.pop()!;
    if (out.has(hash)) continue;
    const info = infos.get(hash);
    if (info === undefined) continue;
    out.add(hash);
    for (const ref of info.references) todo.push(ref.slice(0, 32));
  }
  return out;
}

/** Invariants 1, 2, 3 and 5 over the whole bucket. */
async function checkBucket(real: Real): Promise<void> {
  const objects = await listAll();
  const present = new Set(objects.map((o) => o.key));
  const byKey = new Map(objects.map((o) => [o.key, o]));
  for (const key of [...real.seen.narinfos.keys()]) if (!present.has(key)) real.seen.narinfos.delete(key);
  for (const key of [...real.seen.nars.keys()]) if (!present.has(key)) real.seen.nars.delete(key);

  for (const o of objects) {
    const nar = NAR_KEY.exec(o.key);
    if (nar !== null) {
      const seenEtag = real.seen.nars.get(o.key);
      if (seenEtag === o.etag) continue;
      expect(seenEtag, `the bytes of ${o.key} changed while it was stored`).toBeUndefined();
      const bytes = new Uint8Array(await (await env.CACHE.get(o.key))!.arrayBuffer());
      expect(toHex(await sha256(bytes)), `${o.key} does not hash to its name`).toBe(toHex(decodeNix32(nar[1]!, 32)));
      real.seen.nars.set(o.key, o.etag);
      continue;
    }
    if (!NARINFO_KEY.test(o.key)) continue;
    const text = await (await env.CACHE.get(o.key))!.text();
    expect(text.length).toBeLessThanOrEqual(MAX_NARINFO_LENGTH);
    const info = parseNarInfo(text);
    expect(info.sigs.length).toBeLessThanOrEqual(MAX_SIGNATURES);
    expect(new Set(info.sigs.map(keyNameOf)).size, `two Sigs by one key in ${o.key}`).toBe(info.sigs.length);
    expect(await verifyNarInfo(info, [TEST_PUBLIC_KEY]), `${o.key} lacks a valid signature by the Worker`).toBe(true);
    const identity = formatNarInfo({ ...info, sigs: [] });
    const seen = real.seen.narinfos.get(o.key);
    if (seen !== undefined) {
      expect(identity, `${o.key} changed while it was stored`).toBe(seen.identity);
      for (const sig of seen.sigs) expect(info.sigs, `a signature of ${o.key} was removed`).toContain(sig);
    }
    real.seen.narinfos.set(o.key, { identity, sigs: info.sigs });
    // No holes: the NAR, and every reference as that exact store path.
    const narObject = byKey.get(info.url);
    expect(narObject, `${o.key} points at ${info.url}, which is not stored`).toBeDefined();
    expect(narObject!.size).toBe(info.fileSize);
    const self = info.storePath.slice("/nix/store/".length);
    for (const ref of info.references) {
      if (ref === self) continue;
      const refKey = `${ref.slice(0, 32)}.narinfo`;
      expect(present.has(refKey), `${o.key} references ${ref}, which is not stored`).toBe(true);
      const refInfo = parseNarInfo(await (await env.CACHE.get(refKey))!.text());
      expect(refInfo.storePath, `${o.key} references ${ref}, but ${refKey} is another path`).toBe(`/nix/store/${ref}`);
    }
  }
  await checkIndex();
}

/** Invariant 7: every row of the index has its narinfo object, with the same facts. */
async function checkIndex(): Promise<void> {
  const rows = await env.DB.prepare("SELECT hash, name, nar_file, file_size, nar_size, refs FROM paths").all<{
    hash: string; name: string; nar_file: string; file_size: number; nar_size: number; refs: string;
  }>();
  for (const row of rows.results) {
    const obj = await env.CACHE.get(`${row.hash}.narinfo`);
    expect(obj, `the index has ${row.hash}-${row.name}, whose narinfo is not stored`).not.toBeNull();
    const info = parseNarInfo(await obj!.text());
    expect(info.storePath).toBe(`/nix/store/${row.hash}-${row.name}`);
    expect(info.url).toBe(`nar/${row.nar_file}`);
    expect([info.fileSize, info.narSize]).toEqual([row.file_size, row.nar_size]);
    const refs = info.references.map((r) => r.slice(0, 32)).filter((h) => h !== row.hash);
    expect(JSON.parse(row.refs)).toEqual([...new Set(refs)]);
  }
}

/** Whether every reference of `p` (but itself) is stored as that exact path. */
async function referencesStored(p: TestPath): Promise<boolean> {
  for (const ref of p.info.references) {
    if (ref === p.baseName) continue;
    const obj = await env.CACHE.get(`${ref.slice(0, 32)}.narinfo`);
    if (obj === null || parseNarInfo(await obj.text()).storePath !== `/nix/store/${ref}`) return false;
  }
  return true;
}

async function storedIdentity(hash: string): Promise<string | null> {
  const obj = await env.CACHE.get(`${hash}.narinfo`);
  return obj === null ? null : formatNarInfo({ ...parseNarInfo(await obj.text()), sigs: [] });
}

async function putNarInfoAs(real: Real, who: Who, p: TestPath, info: NarInfo): Promise<{ status: number; body: string }> {
  const res = await call(`/${p.hash}.narinfo`, { method: "PUT", body: formatNarInfo(info), headers: who === "honest" ? HONEST : HOSTILE });
  return answer(real, `${who} PUT ${p.baseName}.narinfo`, res);
}

async function putNarAs(real: Real, who: Who, p: TestPath): Promise<{ status: number; body: string }> {
  const res = await call(`/nar/${p.fileName}`, { method: "PUT", body: p.file, headers: who === "honest" ? HONEST : HOSTILE });
  return answer(real, `${who} PUT nar of ${p.baseName}`, res);
}

type Cmd = fc.AsyncCommand<Model, Real>;

// --- the honest writer ---------------------------------------------------------------

/** Pushes a small path as Nix does (NAR, then narinfo); success is owed unless squatted. */
class HonestPush implements Cmd {
  readonly i: number;
  constructor(i: number) {
    this.i = i;
  }
  check = () => true;
  async run(_m: Model, r: Real): Promise<void> {
    const p = r.u.small[this.i]!;
    const nar = await putNarAs(r, "honest", p);
    expect([201, 204], "an honest NAR upload was refused").toContain(nar.status);
    const before = await storedIdentity(p.hash);
    const refsOk = await referencesStored(p);
    const res = await putNarInfoAs(r, "honest", p, p.info);
    const mine = formatNarInfo(p.info);
    if (!refsOk) expect(res.status).toBe(422);
    else if (before === null || before === mine) expect([201, 204], `honest push of ${p.baseName} refused: ${res.body}`).toContain(res.status);
    else expect(res.status, "a squatted path must stay as it is").toBe(409);
    await checkBucket(r);
  }
  toString = () => `HonestPush(${this.i})`;
}

/** Starts (or resumes) the honest multipart upload of the big NAR. */
class HonestStart implements Cmd {
  check = (m: Readonly<Model>) => m.honestUpload === null;
  async run(m: Model, r: Real): Promise<void> {
    const res = await call(`/_api/v1/multipart/nar/${r.u.big.fileName}`, { method: "POST", body: JSON.stringify({ size: r.u.big.file.length, partSize: PART_BYTES }), headers: HONEST });
    const { status, body } = await answer(r, "honest multipart start", res);
    expect([200, 201], `honest multipart start refused: ${body}`).toContain(status);
    const json = JSON.parse(body) as { stored: boolean; uploadId?: string; partCount?: number; parts?: Array<{ partNumber: number }> };
    if (!json.stored) m.honestUpload = { uploadId: json.uploadId!, partCount: json.partCount!, sent: new Set((json.parts ?? []).map((p) => p.partNumber)) };
    await checkBucket(r);
  }
  toString = () => "HonestStart";
}

class HonestPart implements Cmd {
  readonly part: number;
  constructor(part: number) {
    this.part = part;
  }
  check = (m: Readonly<Model>) => m.honestUpload !== null && this.part <= m.honestUpload.partCount;
  async run(m: Model, r: Real): Promise<void> {
    const up = m.honestUpload!;
    const body = r.u.big.file.slice((this.part - 1) * PART_BYTES, this.part * PART_BYTES);
    const res = await call(`/_api/v1/multipart/nar/${r.u.big.fileName}/${this.part}?uploadId=${encodeURIComponent(up.uploadId)}`, { method: "PUT", body, headers: HONEST });
    const { status, body: text } = await answer(r, `honest part ${this.part}`, res);
    expect(status, `an honest part was refused: ${text}`).toBe(200);
    up.sent.add(this.part);
    await checkBucket(r);
  }
  toString = () => `HonestPart(${this.part})`;
}

/** Completes the honest upload once every part is sent, then publishes the big path. */
class HonestComplete implements Cmd {
  check = (m: Readonly<Model>) => m.honestUpload !== null && m.honestUpload.sent.size === m.honestUpload.partCount;
  async run(m: Model, r: Real): Promise<void> {
    const up = m.honestUpload!;
    const res = await call(`/_api/v1/multipart/nar/${r.u.big.fileName}/complete?uploadId=${encodeURIComponent(up.uploadId)}`, { method: "POST", headers: HONEST });
    const { status, body } = await answer(r, "honest multipart complete", res);
    expect([200, 201], `the honest upload did not complete: ${body}`).toContain(status);
    m.honestUpload = null;
    const stored = await env.CACHE.head(`nar/${r.u.big.fileName}`);
    expect(stored?.size, "the completed NAR is not stored").toBe(r.u.big.file.length);
    const before = await storedIdentity(r.u.big.hash);
    const refsOk = await referencesStored(r.u.big);
    const put = await putNarInfoAs(r, "honest", r.u.big, r.u.big.info);
    if (!refsOk) expect(put.status).toBe(422);
    else if (before === null || before === formatNarInfo(r.u.big.info)) expect([201, 204]).toContain(put.status);
    else expect(put.status).toBe(409);
    await checkBucket(r);
  }
  toString = () => "HonestComplete";
}

// --- the admin -------------------------------------------------------------------------

class Pin implements Cmd {
  readonly i: number;
  constructor(i: number) {
    this.i = i;
  }
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    const p = [...r.u.small, r.u.big][this.i]!;
    const stored = (await env.CACHE.head(`${p.hash}.narinfo`)) !== null;
    const res = await call(`/_api/v1/pins/pin-${this.i}`, { method: "PUT", body: JSON.stringify({ path: p.storePath }), headers: ADMIN });
    const { status } = await answer(r, `pin ${p.baseName}`, res);
    if (stored) {
      expect([200, 201]).toContain(status);
      m.pins.set(`pin-${this.i}`, p.hash);
    } else expect(status).toBeGreaterThanOrEqual(400);
    await checkBucket(r);
  }
  toString = () => `Pin(${this.i})`;
}

class Unpin implements Cmd {
  readonly i: number;
  constructor(i: number) {
    this.i = i;
  }
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    const res = await call(`/_api/v1/pins/pin-${this.i}`, { method: "DELETE", headers: ADMIN });
    const { status } = await answer(r, `unpin ${this.i}`, res);
    expect(status).toBe(m.pins.has(`pin-${this.i}`) ? 200 : 404);
    m.pins.delete(`pin-${this.i}`);
    await checkBucket(r);
  }
  toString = () => `Unpin(${this.i})`;
}

/** Retention in the collections' settings (gcSettings). */
const RETENTION_MS = 30 * DAY_MS;

/**
 * A whole collection, after the clock moved on by a minute or (`old`) by 40 days. Paths are
 * pushed at the real time, so once the clock is past retention every unpinned path is old
 * and only pinned closures stay; before, everything stays.
 */
class Collect implements Cmd {
  readonly old: boolean;
  constructor(old: boolean) {
    this.old = old;
  }
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    const before = await storedNarInfos();
    r.clock.advance(this.old ? 40 * DAY_MS : 60 * 1000);
    const allOld = r.clock.now - Date.now() > RETENTION_MS;
    const kept = allOld ? closure(m.pins.values(), before) : new Set(before.keys());
    await collect(env.CACHE, gcSettings({ retentionMs: RETENTION_MS }), r.clock);
    r.log.push(`collection (${allOld ? "all old" : "all young"})`);
    const after = await storedNarInfos();
    for (const hash of kept) {
      const info = after.get(hash);
      expect(info, `the collection deleted ${hash}, which it had to keep`).toBeDefined();
      expect(await env.CACHE.head(info!.url), `the collection deleted the NAR of kept ${hash}`).not.toBeNull();
    }
    for (const [name, hash] of m.pins) if (!after.has(hash)) m.pins.delete(name);
    await checkBucket(r);
  }
  toString = () => `Collect(${this.old ? "old" : "young"})`;
}

// --- the hostile token -----------------------------------------------------------------

/** Publishes other contents under an honest store path (wins only if it is first). */
class Squat implements Cmd {
  readonly i: number;
  constructor(i: number) {
    this.i = i;
  }
  check = () => true;
  async run(_m: Model, r: Real): Promise<void> {
    const target = [...r.u.small, r.u.big][this.i]!;
    const evil = r.u.evil.get(target.hash)!;
    await putNarAs(r, "hostile", evil);
    const before = await storedIdentity(target.hash);
    const res = await putNarInfoAs(r, "hostile", evil, evil.info);
    // Only the same document (its own earlier squat) may be accepted again, as a no-op.
    if (before !== null && before !== formatNarInfo(evil.info)) expect(res.status, "a stored path was replaced").toBeGreaterThanOrEqual(400);
    await checkBucket(r);
  }
  toString = () => `Squat(${this.i})`;
}

type SigAttack = "huge" | "many" | "forged-own" | "other-key" | "drop";

/** Re-uploads a stored narinfo with other signatures. */
class MergeSignatures implements Cmd {
  readonly i: number;
  readonly kind: SigAttack;
  constructor(i: number, kind: SigAttack) {
    this.i = i;
    this.kind = kind;
  }
  check = () => true;
  async run(_m: Model, r: Real): Promise<void> {
    const target = [...r.u.small, r.u.big][this.i]!;
    const obj = await env.CACHE.get(`${target.hash}.narinfo`);
    const base = obj === null ? target.info : parseNarInfo(await obj.text());
    const fake = (name: string) => `${name}:${toBase64(new Uint8Array(64).fill(3))}`;
    const sigs =
      this.kind === "huge"
        ? [fake("k".repeat(1_040_000))]
        : this.kind === "many"
          ? Array.from({ length: 40 }, (_, n) => fake(`flood-${n}`))
          : this.kind === "forged-own"
            ? [fake(TEST_KEY.name)]
            : this.kind === "other-key"
              ? [await signNarInfo(base, OTHER_KEY)]
              : [];
    const res = await putNarInfoAs(r, "hostile", target, { ...base, sigs });
    if (this.kind === "huge" || this.kind === "many") expect(res.status).toBe(413);
    await checkBucket(r);
  }
  toString = () => `MergeSignatures(${this.i}, ${this.kind})`;
}

/** A path of its own whose reference names a stored hash part with another name. */
class MisnamedReference implements Cmd {
  check = () => true;
  async run(_m: Model, r: Real): Promise<void> {
    await putNarAs(r, "hostile", r.u.misnamed);
    const res = await putNarInfoAs(r, "hostile", r.u.misnamed, r.u.misnamed.info);
    expect(res.status).toBe(422);
    await checkBucket(r);
  }
  toString = () => "MisnamedReference";
}

/** Adding a path of its own is what a write token is for. */
class HostileAdds implements Cmd {
  check = () => true;
  async run(_m: Model, r: Real): Promise<void> {
    await putNarAs(r, "hostile", r.u.extra);
    await putNarInfoAs(r, "hostile", r.u.extra, r.u.extra.info);
    await checkBucket(r);
  }
  toString = () => "HostileAdds";
}

/** Starts its own upload for the big NAR's name (right or wrong size). */
class HostileStart implements Cmd {
  readonly sameSize: boolean;
  constructor(sameSize: boolean) {
    this.sameSize = sameSize;
  }
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    const size = this.sameSize ? r.u.big.file.length : r.u.big.file.length + 1;
    const res = await call(`/_api/v1/multipart/nar/${r.u.big.fileName}`, { method: "POST", body: JSON.stringify({ size, partSize: PART_BYTES }), headers: HOSTILE });
    const { status, body } = await answer(r, `hostile multipart start (${size})`, res);
    if (status === 200 || status === 201) {
      const json = JSON.parse(body) as { stored: boolean; uploadId?: string; partCount?: number };
      if (!json.stored) m.hostileUpload = { uploadId: json.uploadId!, partCount: json.partCount! };
    }
    await checkBucket(r);
  }
  toString = () => `HostileStart(${this.sameSize ? "same size" : "other size"})`;
}

/** Sends garbage parts, into its own upload or (by id) into the honest one. */
class HostilePart implements Cmd {
  readonly part: number;
  readonly intoHonest: boolean;
  constructor(part: number, intoHonest: boolean) {
    this.part = part;
    this.intoHonest = intoHonest;
  }
  check = (m: Readonly<Model>) => (this.intoHonest ? m.honestUpload !== null : m.hostileUpload !== null);
  async run(m: Model, r: Real): Promise<void> {
    const id = this.intoHonest ? m.honestUpload!.uploadId : m.hostileUpload!.uploadId;
    const count = this.intoHonest ? m.honestUpload!.partCount : m.hostileUpload!.partCount;
    const part = Math.min(this.part, count);
    const body = r.u.garbage.slice((part - 1) * PART_BYTES, part * PART_BYTES);
    const res = await call(`/_api/v1/multipart/nar/${r.u.big.fileName}/${part}?uploadId=${encodeURIComponent(id)}`, { method: "PUT", body, headers: HOSTILE });
    const { status } = await answer(r, `hostile part ${part} into ${this.intoHonest ? "the honest" : "its own"} upload`, res);
    if (this.intoHonest) expect(status, "the hostile token wrote into the honest upload").toBeGreaterThanOrEqual(400);
    await checkBucket(r);
  }
  toString = () => `HostilePart(${this.part}, ${this.intoHonest ? "honest" : "own"})`;
}

/** Completes its own upload or (by id) the honest one. */
class HostileComplete implements Cmd {
  readonly honests: boolean;
  constructor(honests: boolean) {
    this.honests = honests;
  }
  check = (m: Readonly<Model>) => (this.honests ? m.honestUpload !== null : m.hostileUpload !== null);
  async run(m: Model, r: Real): Promise<void> {
    const id = this.honests ? m.honestUpload!.uploadId : m.hostileUpload!.uploadId;
    const res = await call(`/_api/v1/multipart/nar/${r.u.big.fileName}/complete?uploadId=${encodeURIComponent(id)}`, { method: "POST", headers: HOSTILE });
    const { status, body } = await answer(r, `hostile complete of ${this.honests ? "the honest" : "its own"} upload`, res);
    if (this.honests) expect(status, "the hostile token completed the honest upload").toBeGreaterThanOrEqual(400);
    else if (status < 300) expect((JSON.parse(body) as { stored?: boolean }).stored, "garbage parts were stored as a NAR").toBe(true);
    if (!this.honests && status !== 409) m.hostileUpload = null;
    await checkBucket(r);
  }
  toString = () => `HostileComplete(${this.honests ? "honest" : "own"})`;
}

/** Aborts its own upload or (by id) the honest one. */
class HostileAbort implements Cmd {
  readonly honests: boolean;
  constructor(honests: boolean) {
    this.honests = honests;
  }
  check = (m: Readonly<Model>) => (this.honests ? m.honestUpload !== null : m.hostileUpload !== null);
  async run(m: Model, r: Real): Promise<void> {
    const id = this.honests ? m.honestUpload!.uploadId : m.hostileUpload!.uploadId;
    const res = await call(`/_api/v1/multipart/nar/${r.u.big.fileName}?uploadId=${encodeURIComponent(id)}`, { method: "DELETE", headers: HOSTILE });
    const { status } = await answer(r, `hostile abort of ${this.honests ? "the honest" : "its own"} upload`, res);
    if (this.honests) expect(status, "the hostile token aborted the honest upload").toBeGreaterThanOrEqual(400);
    else m.hostileUpload = null;
    await checkBucket(r);
  }
  toString = () => `HostileAbort(${this.honests ? "honest" : "own"})`;
}

/** Pins, unpins and collections need the admin token; the write token gets 401 and changes nothing. */
class HostileAdmin implements Cmd {
  readonly what: "pin" | "unpin" | "gc";
  constructor(what: "pin" | "unpin" | "gc") {
    this.what = what;
  }
  check = () => true;
  async run(_m: Model, r: Real): Promise<void> {
    const before = await listAll();
    const res =
      this.what === "gc"
        ? await call("/_api/v1/gc", { method: "POST", body: "{}", headers: HOSTILE })
        : await call("/_api/v1/pins/pin-0", { method: this.what === "pin" ? "PUT" : "DELETE", body: this.what === "pin" ? JSON.stringify({ path: r.u.extra.storePath }) : null, headers: HOSTILE });
    const { status } = await answer(r, `hostile ${this.what}`, res);
    expect(status).toBe(401);
    expect((await listAll()).map((o) => `${o.key} ${o.etag}`)).toEqual(before.map((o) => `${o.key} ${o.etag}`));
  }
  toString = () => `HostileAdmin(${this.what})`;
}

const pathIndex = fc.integer({ min: 0, max: 4 });
const anyIndex = fc.integer({ min: 0, max: 5 });
const part = fc.integer({ min: 1, max: 2 });

const commands = [
  pathIndex.map((i) => new HonestPush(i)),
  pathIndex.map((i) => new HonestPush(i)),
  fc.constant(new HonestStart()),
  part.map((n) => new HonestPart(n)),
  fc.constant(new HonestComplete()),
  anyIndex.map((i) => new Pin(i)),
  anyIndex.map((i) => new Unpin(i)),
  fc.boolean().map((old) => new Collect(old)),
  anyIndex.map((i) => new Squat(i)),
  fc.tuple(anyIndex, fc.constantFrom<SigAttack>("huge", "many", "forged-own", "other-key", "drop")).map(([i, k]) => new MergeSignatures(i, k)),
  fc.constant(new MisnamedReference()),
  fc.constant(new HostileAdds()),
  fc.boolean().map((same) => new HostileStart(same)),
  fc.tuple(part, fc.boolean()).map(([n, h]) => new HostilePart(n, h)),
  fc.boolean().map((h) => new HostileComplete(h)),
  fc.boolean().map((h) => new HostileAbort(h)),
  fc.constantFrom<"pin" | "unpin" | "gc">("pin", "unpin", "gc").map((w) => new HostileAdmin(w)),
];

describe("an honest and a hostile write token, in any order", () => {
  it(
    "never break the invariants",
    async () => {
      const u = await universe();
      await fc.assert(
        fc.asyncProperty(fc.commands(commands, { maxCommands: MAX_COMMANDS }), async (cmds) => {
          await resetAll();
          const real: Real = { u, seen: { narinfos: new Map(), nars: new Map() }, log: [], clock: new TestClock() };
          try {
            await fc.asyncModelRun(() => ({ model: { honestUpload: null, hostileUpload: null, pins: new Map() }, real }), cmds);
          } catch (err) {
            throw new Error(`${err instanceof Error ? err.message : String(err)}\nrequests:\n  ${real.log.join("\n  ")}`);
          }
        }),
        { numRuns: RUNS },
      );
    },
    30 * 60 * 1000,
  );
});
