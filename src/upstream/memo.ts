// Brief memory of upstream answers in the data centre's edge cache (Workers Cache API,
// caches.default), so that a popular path nobody has, or an upstream that hangs, does not
// cost every request a fan-out to every upstream:
//
//   <origin>/_upstream-memo/<fingerprint>/narinfo/<hash32>   which upstream had the narinfo
//                                                            (and its text), or that none did
//   <origin>/_upstream-memo/<fingerprint>/down/<index>       upstream <index> failed recently
//
// The keys live under the request's own origin (the zone's cache) on a path no R2 key can
// have (R2 keys never start with "_"), and the fingerprint of the upstream list makes a
// memo of another configuration invisible. Entries are only read after the request's
// credentials were checked, so a private cache may use them too. The Cache API is per data
// centre and best effort: a failed match or put is a cache miss, never an error. Locally
// (wrangler dev, tests) it works the same and is harmless with these short lifetimes; on
// workers.dev it does nothing.

import type { SubrequestBudget } from "./budget.ts";

/** Seconds a found narinfo is reused: as long as the edge keeps this cache's own narinfos. */
export const HIT_MEMO_SECONDS = 60;
/**
 * Seconds a path no upstream had stays "not found". Short, because it may be pushed to an
 * upstream any moment; Nix itself remembers misses for an hour anyway.
 */
export const MISS_MEMO_SECONDS = 30;
/**
 * Seconds an upstream that timed out, failed to connect or answered 5xx is skipped. One
 * request pays for its timeout; the next ones of this data centre go straight on.
 */
export const DOWN_MEMO_SECONDS = 30;

const MEMO_PREFIX = "/_upstream-memo/";
const RESULT_HEADER = "X-Memo-Result";
const UPSTREAM_HEADER = "X-Memo-Upstream";

/** Where memos of one configuration live, and the budget their Cache API calls draw on. */
export interface MemoScope {
  /** The request's origin, e.g. `https://cache.example.com`. */
  origin: string;
  /** Aggregation fingerprint (settings.ts). */
  fingerprint: string;
  budget: SubrequestBudget;
}

export type NarInfoMemo = { kind: "hit"; upstreamIndex: number; text: string } | { kind: "miss" };

function available(): boolean {
  return typeof caches !== "undefined";
}

function key(scope: MemoScope, rest: string): string {
  return `${scope.origin}${MEMO_PREFIX}${scope.fingerprint}/${rest}`;
}

async function match(scope: MemoScope, k: string): Promise<Response | undefined> {
  if (!available() || !scope.budget.take()) return undefined;
  try {
    return await caches.default.match(k);
  } catch (err) {
    console.warn("upstream memo: match failed", err);
    return undefined;
  }
}

async function put(scope: MemoScope, k: string, body: string, seconds: number, headers: Record<string, string>): Promise<void> {
  if (!available() || !scope.budget.take()) return;
  try {
    await caches.default.put(k, new Response(body, { headers: { ...headers, "Cache-Control": `max-age=${seconds}` } }));
  } catch (err) {
    console.warn("upstream memo: put failed", err);
  }
}

/** The remembered outcome of looking up `hash` upstream, or null when none is remembered. */
export async function recallNarInfo(scope: MemoScope, hash: string): Promise<NarInfoMemo | null> {
  const res = await match(scope, key(scope, `narinfo/${hash}`));
  if (res === undefined) return null;
  const result = res.headers.get(RESULT_HEADER);
  if (result === "miss") {
    await res.body?.cancel();
    return { kind: "miss" };
  }
  const index = Number(res.headers.get(UPSTREAM_HEADER));
  if (result !== "hit" || !Number.isInteger(index)) {
    await res.body?.cancel();
    return null;
  }
  try {
    return { kind: "hit", upstreamIndex: index, text: await res.text() };
  } catch {
    return null;
  }
}

/** Remembers the outcome of looking up `hash` upstream. */
export async function rememberNarInfo(scope: MemoScope, hash: string, memo: NarInfoMemo): Promise<void> {
  const k = key(scope, `narinfo/${hash}`);
  if (memo.kind === "miss") return put(scope, k, "", MISS_MEMO_SECONDS, { [RESULT_HEADER]: "miss" });
  return put(scope, k, memo.text, HIT_MEMO_SECONDS, { [RESULT_HEADER]: "hit", [UPSTREAM_HEADER]: String(memo.upstreamIndex) });
}

/** True when upstream `index` failed recently and should be skipped. */
export async function recallDown(scope: MemoScope, index: number): Promise<boolean> {
  const res = await match(scope, key(scope, `down/${index}`));
  if (res === undefined) return false;
  await res.body?.cancel();
  return true;
}

/** Remembers that upstream `index` just failed. */
export async function rememberDown(scope: MemoScope, index: number): Promise<void> {
  return put(scope, key(scope, `down/${index}`), "", DOWN_MEMO_SECONDS, { [RESULT_HEADER]: "down" });
}
