// The push plan: from a closure to the ordered list of paths to upload.
//
// 1. Ask the cache which of the closure's narinfos it lacks (batched, see remote-cache.ts).
// 2. Of those, leave out paths signed by an upstream cache's key (cache.nixos.org-1 by
//    default): clients get them from upstream, and the Worker accepts references to paths
//    an upstream cache serves. The key *name* is enough here: Nix only records a
//    signature in the store after checking it against trusted-public-keys.
// 3. Order the rest references first (a topological sort), so that every narinfo can be
//    written after the narinfos of its references: the cache never shows a path whose
//    closure it cannot serve (ARCHITECTURE.md, "write order is the commit protocol").
import type { PathReport } from "./progress.ts";
import type { RemoteCache } from "./remote-cache.ts";
import type { StorePathInfo } from "./store.ts";

/** Key names whose paths are skipped by default: the official cache's. */
export const DEFAULT_UPSTREAM_KEYS: readonly string[] = ["cache.nixos.org-1"];

export interface PushPlan {
  /** Every path of the closure, as queried. */
  closure: StorePathInfo[];
  /** Paths to upload, references before referrers. */
  toUpload: StorePathInfo[];
  /** Paths whose narinfo the cache already has. */
  alreadyCached: StorePathInfo[];
  /** Missing from the cache but signed by an upstream key, so not uploaded. */
  skippedUpstream: StorePathInfo[];
  /**
   * Paths refused before any upload, reported as failed or blocked (`uploader import`: a
   * narinfo without a trusted signature, a reference the source lacks, and what depends on them).
   */
  rejected?: PathReport[];
}

export interface PlanOptions {
  /** Skip paths signed by these key names (empty: upload everything missing). */
  upstreamKeys: readonly string[];
}

export async function planPush(closure: StorePathInfo[], cache: RemoteCache, options: PlanOptions): Promise<PushPlan> {
  const missing = await cache.missing(closure.map((p) => p.hashPart));
  const alreadyCached: StorePathInfo[] = [];
  const skippedUpstream: StorePathInfo[] = [];
  const candidates: StorePathInfo[] = [];
  for (const info of closure) {
    if (!missing.has(info.hashPart)) alreadyCached.push(info);
    else if (isSignedBy(info, options.upstreamKeys)) skippedUpstream.push(info);
    else candidates.push(info);
  }
  return { closure, toUpload: referencesFirst(candidates), alreadyCached, skippedUpstream };
}

/** True when one of the path's signatures carries one of the key names. */
export function isSignedBy(info: StorePathInfo, keyNames: readonly string[]): boolean {
  return info.sigs.some((sig) => {
    const colon = sig.indexOf(":");
    return colon > 0 && keyNames.includes(sig.slice(0, colon));
  });
}

/**
 * Orders paths so each comes after all of its references that are in the list
 * (self-references ignored). Kahn's algorithm, with ties broken by path so the order is
 * the same on every run. Store paths cannot form cycles; were one there anyway, its paths
 * are appended at the end rather than dropped.
 */
export function referencesFirst(paths: readonly StorePathInfo[]): StorePathInfo[] {
  const byPath = new Map(paths.map((p) => [p.path, p]));
  const pending = new Map<string, number>();
  const referrers = new Map<string, string[]>();
  for (const p of paths) {
    const refs = new Set(p.references.filter((r) => r !== p.path && byPath.has(r)));
    pending.set(p.path, refs.size);
    for (const r of refs) {
      const list = referrers.get(r);
      if (list) list.push(p.path);
      else referrers.set(r, [p.path]);
    }
  }
  // Store paths are ASCII, so comparing UTF-16 code units is comparing bytes.
  const byName = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
  const ready = [...pending].filter(([, n]) => n === 0).map(([p]) => p).sort(byName);
  const order: StorePathInfo[] = [];
  while (ready.length > 0) {
    // `ready` is kept sorted, so the next path is always the smallest ready one.
    const next = ready.shift()!;
    order.push(byPath.get(next)!);
    const unblocked: string[] = [];
    for (const referrer of referrers.get(next) ?? []) {
      const left = pending.get(referrer)! - 1;
      pending.set(referrer, left);
      if (left === 0) unblocked.push(referrer);
    }
    if (unblocked.length > 0) {
      ready.push(...unblocked);
      ready.sort(byName);
    }
  }
  if (order.length < paths.length) {
    const placed = new Set(order.map((p) => p.path));
    order.push(...paths.filter((p) => !placed.has(p.path)).sort((a, b) => byName(a.path, b.path)));
  }
  return order;
}
