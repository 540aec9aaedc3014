// The D1 index of published paths, against the real local D1 and R2: what a narinfo upload
// records (row after object, who pushed it, audit), the one-query answers about many paths
// (missing hashes, references by hash part and name), refreshes, and adoption of objects the
// index does not know (a crash, or a bucket from before the index), page by page.
import { env } from "cloudflare:workers";
import { reset } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { UNINDEXED_LOOKUPS, type MissingAnswer } from "../../src/api/missing.ts";
import { formatNarInfo } from "../../src/nix/narinfo.ts";
import { NIX32_ALPHABET } from "../../src/nix/nix32.ts";
import { adoptObjects, ADOPTION_PAGE, isIndexComplete } from "../../src/path-index/adoption.ts";
import { encodeNarInfoMeta } from "../../src/storage/narinfo-meta.ts";
import { indexedPaths, indexStats, recordPath, rowOf, unindexedHashes, unindexedPaths } from "../../src/storage/path-index.ts";
import { bearer, call, push, putNar, putNarInfo, TEST_SECOND_WRITE_TOKEN, testPath, type TestPath } from "../helpers/worker.ts";

afterEach(() => reset());

async function rows(): Promise<Array<{ hash: string; name: string; token: string | null; refs: string }>> {
  return (await env.DB.prepare("SELECT hash, name, token, refs FROM paths ORDER BY name").all<{ hash: string; name: string; token: string | null; refs: string }>()).results;
}

async function audit(): Promise<Array<{ actor: string; action: string; subject: string }>> {
  return (await env.DB.prepare("SELECT actor, action, subject FROM audit ORDER BY id").all<{ actor: string; action: string; subject: string }>()).results;
}

async function missingAnswer(hashes: string[]): Promise<MissingAnswer> {
  const res = await call("/_api/v1/missing", { method: "POST", body: JSON.stringify({ hashes }), headers: bearer() });
  expect(res.status).toBe(200);
  return (await res.json()) as MissingAnswer;
}

async function missing(hashes: string[]): Promise<string[]> {
  const answer = await missingAnswer(hashes);
  expect(answer.unchecked).toEqual([]);
  return answer.missing;
}

/** Stores a narinfo object straight into R2, as an older version or a crash left it. */
async function storeUnindexed(p: TestPath, withMeta: boolean): Promise<void> {
  expect([201, 204]).toContain((await putNar(p)).status);
  await env.CACHE.put(`${p.hash}.narinfo`, formatNarInfo(p.info), withMeta ? { customMetadata: encodeNarInfoMeta(p.info, Date.now()) } : {});
}

describe("what a narinfo upload records", () => {
  it("a row after the object, naming the token that published it, and an audit row", async () => {
    const dep = await testPath("idx-dep");
    const top = await testPath("idx-top", { references: [dep], selfReference: true });
    await push(dep);
    expect((await putNar(top)).status).toBe(201);
    expect((await putNarInfo(top.hash, formatNarInfo(top.info), bearer(TEST_SECOND_WRITE_TOKEN))).status).toBe(201);
    expect(await rows()).toEqual([
      { hash: dep.hash, name: "idx-dep", token: "WRITE_TOKEN", refs: "[]" },
      { hash: top.hash, name: "idx-top", token: "WRITE_TOKEN_CI", refs: JSON.stringify([dep.hash]) },
    ]);
    expect(await audit()).toEqual([
      { actor: "WRITE_TOKEN", action: "publish", subject: dep.storePath },
      { actor: "WRITE_TOKEN_CI", action: "publish", subject: top.storePath },
    ]);
    expect(await indexStats(env.DB)).toEqual({ paths: 2, fileBytes: dep.file.length + top.file.length, narBytes: dep.nar.length + top.nar.length });
  });

  it("a refused upload records nothing", async () => {
    const p = await testPath("idx-refused");
    expect((await putNarInfo(p.hash, formatNarInfo(p.info))).status).toBe(422);
    expect(await rows()).toEqual([]);
    expect(await audit()).toEqual([]);
  });

  it("an identical re-upload indexes an object a crash left unindexed", async () => {
    const p = await testPath("idx-crash");
    await storeUnindexed(p, true);
    expect(await rows()).toEqual([]);
    expect((await putNarInfo(p.hash, formatNarInfo(p.info))).status).toBe(204);
    expect((await rows()).map((r) => r.name)).toEqual(["idx-crash"]);
  });
});

describe("questions about many paths, one query each", () => {
  it("unindexedHashes and unindexedPaths keep input order and match names exactly", async () => {
    const a = await testPath("idx-a");
    const b = await testPath("idx-b");
    await push(a);
    await push(b);
    const absent = "0".repeat(32);
    expect(await unindexedHashes(env.DB, [absent, a.hash, "1".repeat(32), b.hash])).toEqual([absent, "1".repeat(32)]);
    expect(await unindexedPaths(env.DB, [`${a.hash}-idx-b`, b.baseName, `${absent}-x`, a.baseName])).toEqual([`${a.hash}-idx-b`, `${absent}-x`]);
    const found = await indexedPaths(env.DB, [b.hash, absent]);
    expect(found.map((p) => [p.hash, p.name, p.narFile, p.fileSize])).toEqual([[b.hash, "idx-b", b.fileName, b.file.length]]);
  });

  it("a row's references go in as one spaced string and come out as the same list: none, one, many; names with every allowed character", async () => {
    const hash = (i: number): string => Array.from({ length: 32 }, (_, k) => NIX32_ALPHABET[(i * 7 + k) % 32]).join("");
    const row = (i: number, refs: string[]) => ({ hash: hash(i), name: `p${i}`, narFile: `${"1".repeat(52)}.nar`, fileSize: 1, narSize: 1, refs, token: null, pushedAt: 1 });
    const lists = [[], [hash(90)], Array.from({ length: 900 }, (_, i) => hash(100 + i))];
    for (const [i, refs] of lists.entries()) await recordPath(env.DB, row(i, refs), null, null);
    const found = await indexedPaths(env.DB, lists.map((_, i) => hash(i)));
    expect(new Map(found.map((p) => [p.hash, p.refs]))).toEqual(new Map(lists.map((refs, i) => [hash(i), refs])));
    // The column holds JSON, as garbage collection reads it.
    for (const r of await rows()) expect(JSON.parse(r.refs)).toEqual(lists[Number(r.name.slice(1))]);
    // Base names with each character a name may have, asked about as one spaced string.
    const names = [`${hash(0)}-p0`, `${hash(1)}-a+b-c._?=Z9`, `${hash(2)}-p2`, `${hash(2)}-p2.x`];
    expect(await unindexedPaths(env.DB, names)).toEqual([names[1], names[3]]);
    // A word the parsers would never let through is refused, not stored as some other list.
    await expect(recordPath(env.DB, row(9, [`${hash(91)}"x`]), null, null)).rejects.toThrow();
    expect(await indexedPaths(env.DB, [hash(9)])).toEqual([]);
  });

  it("the missing query answers from the index once it is complete, and from R2 too before", async () => {
    const indexed = await testPath("idx-indexed");
    await push(indexed);
    const legacy = await testPath("idx-legacy");
    await storeUnindexed(legacy, false);
    const absent = "2".repeat(32);
    expect(await isIndexComplete(env.DB)).toBe(false);
    expect(await missing([indexed.hash, legacy.hash, absent])).toEqual([absent]);
    // The request adopted a page of the bucket: the index is complete.
    expect(await isIndexComplete(env.DB)).toBe(true);
    expect((await rows()).map((r) => r.name).sort()).toEqual(["idx-indexed", "idx-legacy"]);
    expect(await missing([indexed.hash, legacy.hash, absent])).toEqual([absent]);
    // An object written behind the complete index's back is reported missing until adopted.
    const late = await testPath("idx-late");
    await storeUnindexed(late, true);
    expect(await missing([late.hash])).toEqual([late.hash]);
    await adoptObjects(env.CACHE, env.DB);
    expect(await missing([late.hash])).toEqual([]);
  });

  it("while a bucket larger than one adoption page is adopted, the missing query finds the rest in R2", async () => {
    // Adoption reads the narinfos' metadata, not their NARs: the objects alone do here.
    const legacy = await Promise.all(Array.from({ length: ADOPTION_PAGE + 1 }, (_, i) => testPath(`idx-page-${i}`)));
    await Promise.all(legacy.map((p) => env.CACHE.put(`${p.hash}.narinfo`, formatNarInfo(p.info), { customMetadata: encodeNarInfoMeta(p.info, Date.now()) })));
    // The last in key order is beyond the first page the request adopts.
    const last = legacy.map((p) => p.hash).sort().at(-1)!;
    const absent = "3".repeat(32);
    expect(await missing([last, absent])).toEqual([absent]);
    expect(await isIndexComplete(env.DB)).toBe(false);
    expect((await rows()).map((r) => r.hash)).not.toContain(last);
    // The next request's page ends the pass: from then on the index answers alone.
    expect(await missing([last, absent])).toEqual([absent]);
    expect(await isIndexComplete(env.DB)).toBe(true);
  });

  it(`while the index is incomplete, a request looks up at most ${UNINDEXED_LOOKUPS} hashes it lacks in R2 and leaves the rest unchecked`, async () => {
    // Two and a half pages of objects from before the index; the asked ones lie beyond the
    // first page, so the first request's page of adoption does not index them.
    const legacy = await Promise.all(Array.from({ length: ADOPTION_PAGE * 2 + ADOPTION_PAGE / 2 }, (_, i) => testPath(`idx-lookups-${i}`)));
    await Promise.all(legacy.map((p) => env.CACHE.put(`${p.hash}.narinfo`, formatNarInfo(p.info), { customMetadata: encodeNarInfoMeta(p.info, Date.now()) })));
    const sorted = legacy.map((p) => p.hash).sort();
    const stored = sorted.slice(ADOPTION_PAGE + 10, ADOPTION_PAGE + 50);
    const absent = Array.from({ length: 20 }, (_, i) => `${"0".repeat(31)}${NIX32_ALPHABET[i]}`);
    const asked = stored.flatMap((h, i) => (i % 2 === 0 && absent[i / 2] !== undefined ? [absent[i / 2]!, h] : [h]));
    const isAbsent = (h: string) => absent.includes(h);

    const first = await missingAnswer(asked);
    expect(first.unchecked).toEqual(asked.slice(UNINDEXED_LOOKUPS));
    expect(first.missing).toEqual([...asked.slice(0, UNINDEXED_LOOKUPS).filter(isAbsent), ...first.unchecked]);
    // Asking again for the unchecked ones (as the uploader does) settles them exactly, each
    // request some more (and the adoption moves on).
    const settled = first.missing.filter((h) => !first.unchecked.includes(h));
    let ask = first.unchecked;
    for (let round = 0; round < 5 && ask.length > 0; round++) {
      const answer = await missingAnswer(ask);
      expect(answer.unchecked.length).toBeLessThanOrEqual(Math.max(0, ask.length - UNINDEXED_LOOKUPS));
      expect(answer.missing).toEqual(expect.arrayContaining(answer.unchecked));
      settled.push(...answer.missing.filter((h) => !answer.unchecked.includes(h)));
      ask = answer.unchecked;
    }
    expect(ask).toEqual([]);
    expect(settled.sort()).toEqual([...absent].sort());
  });

  it("a reference that the index lacks but R2 holds as that exact path is accepted", async () => {
    const dep = await testPath("idx-unindexed-dep");
    await storeUnindexed(dep, false);
    const top = await testPath("idx-referrer", { references: [dep] });
    expect((await putNar(top)).status).toBe(201);
    expect((await putNarInfo(top.hash, formatNarInfo({ ...top.info, references: [`${dep.hash}-other-name`] }))).status).toBe(422);
    expect((await putNarInfo(top.hash, formatNarInfo(top.info))).status).toBe(201);
  });
});

describe("adoption", () => {
  it(`indexes a bucket page by page (${ADOPTION_PAGE} narinfos a step), from metadata or by reading the narinfo`, async () => {
    const paths: TestPath[] = [];
    for (let i = 0; i < ADOPTION_PAGE + 30; i++) {
      const p = await testPath(`adopt-${i}`);
      await env.CACHE.put(`${p.hash}.narinfo`, formatNarInfo(p.info), i % 3 === 0 ? {} : { customMetadata: encodeNarInfoMeta(p.info, 1000 + i) });
      paths.push(p);
    }
    const broken = await testPath("adopt-broken");
    await env.CACHE.put(`${broken.hash}.narinfo`, "not a narinfo\n");
    // Objects that are not narinfos are never indexed.
    await env.CACHE.put("nix-cache-info", "StoreDir: /nix/store\n");
    await env.CACHE.put(`nar/${paths[0]!.fileName}`, paths[0]!.file);

    const first = await adoptObjects(env.CACHE, env.DB);
    expect(first.complete).toBe(false);
    expect(await isIndexComplete(env.DB)).toBe(false);
    const second = await adoptObjects(env.CACHE, env.DB);
    expect(second.complete).toBe(true);
    expect(first.adopted + second.adopted).toBe(paths.length);
    expect([...first.unreadable, ...second.unreadable]).toEqual([`${broken.hash}.narinfo`]);
    expect(await isIndexComplete(env.DB)).toBe(true);
    const indexed = await indexedPaths(env.DB, paths.map((p) => p.hash));
    expect(indexed).toHaveLength(paths.length);
    // Push times come from the metadata where it is there.
    expect(indexed.find((r) => r.hash === paths[1]!.hash)!.pushedAt).toBe(1001);
    // A second pass adopts nothing new and keeps the index complete.
    await adoptObjects(env.CACHE, env.DB);
    expect((await adoptObjects(env.CACHE, env.DB)).adopted).toBe(0);
    expect(await isIndexComplete(env.DB)).toBe(true);
  });
});

describe("rows written (what the free plan's 100,000 a day count)", () => {
  /** D1 behind a proxy that sums the rows its batches say they wrote. */
  function countingWrites(): { db: D1Database; written: () => number } {
    let written = 0;
    const db = new Proxy(env.DB, {
      get(target, prop) {
        const value = Reflect.get(target, prop) as unknown;
        if (prop !== "batch") return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
        return async (statements: D1PreparedStatement[]) => {
          const results = await target.batch(statements);
          for (const r of results) written += r.meta.rows_written;
          return results;
        };
      },
    });
    return { db, written: () => written };
  }

  it("a new path costs 2 (its row and its audit row); pushing it again costs 1, or none when the row has a later push", async () => {
    const p = await testPath("rows-written");
    const { db, written } = countingWrites();
    const row = rowOf(p.info, "WRITE_TOKEN", 1000)!;
    await recordPath(db, row, "publish", "WRITE_TOKEN");
    expect(written()).toBe(2);
    await recordPath(db, { ...row, pushedAt: 2000 }, null, null);
    expect(written()).toBe(3);
    await recordPath(db, { ...row, pushedAt: 1500 }, null, null);
    expect(written()).toBe(3);
  });
});
