// Finding a narinfo in the aggregated upstreams: asked one after the other in the
// configured order, the first valid answer wins.
//
// Per upstream, the answer is one of
//   hit      200 with a narinfo that parses (core parser) and whose StorePath has the
//            requested hash part, naming its NAR with an http(s) URL
//   absent   404, 410 or 403 (what Nix itself reads as "not there", PROTOCOL §5.3)
//   garbage  200 with anything else: logged, and the next upstream is asked
//   failed   timeout, network error, any other status (5xx, 401 …): logged, the upstream
//            is remembered as down for a short while (memo.ts), the next one is asked
// so a broken upstream never turns into a 5xx: the worst outcome is "not found". Found
// narinfos and misses are remembered briefly at the edge (memo.ts).

import { NixFormatError } from "../nix/errors.ts";
import { MAX_NARINFO_LENGTH, parseNarInfo, type NarInfo } from "../nix/narinfo.ts";
import { parseStorePath } from "../nix/store-path.ts";
import { narInfoKey } from "../storage/keys.ts";
import type { SubrequestBudget } from "./budget.ts";
import { readSmallText, upstreamFetch } from "./client.ts";
import { recallDown, recallNarInfo, rememberDown, rememberNarInfo, type MemoScope } from "./memo.ts";
import { locateNar, type NarLocation } from "./nar-url.ts";
import type { Aggregation, Upstream } from "./settings.ts";

/**
 * How long one upstream may take to deliver a narinfo (headers and body). Narinfos are a
 * few hundred bytes that a healthy cache serves in well under a second from anywhere; a
 * client waits this long once per hanging upstream before it is remembered as down.
 */
export const NARINFO_TIMEOUT_MS = 3000;

/** A narinfo found upstream. */
export interface UpstreamHit {
  upstream: Upstream;
  /** The narinfo exactly as the upstream sent it. */
  text: string;
  info: NarInfo;
  /** Where its NAR is, resolved against the upstream's URL. */
  nar: NarLocation;
}

type Answer =
  | { kind: "hit"; hit: UpstreamHit }
  | { kind: "absent" }
  | { kind: "garbage"; reason: string }
  | { kind: "failed"; reason: string }
  | { kind: "skipped" };

export interface LookupContext {
  aggregation: Aggregation;
  memo: MemoScope;
  budget: SubrequestBudget;
  /**
   * Runs memo writes after the response (ctx.waitUntil); when absent they are awaited,
   * as in background work that is itself inside waitUntil.
   */
  defer?: (work: Promise<unknown>) => void;
}

/** Checks a narinfo text served for `hash` by `upstream`; a hit, or why it is garbage. */
export function judgeNarInfo(upstream: Upstream, hash: string, text: string): Answer {
  let info: NarInfo;
  try {
    info = parseNarInfo(text);
  } catch (e) {
    if (e instanceof NixFormatError) return { kind: "garbage", reason: `unparseable narinfo (${e.message})` };
    throw e;
  }
  const path = parseStorePath(info.storePath);
  if (path === null || path.hash !== hash) {
    return { kind: "garbage", reason: `its narinfo is for ${info.storePath}, not for hash ${hash}` };
  }
  const nar = locateNar(upstream, info.url);
  if (nar === null) return { kind: "garbage", reason: "its narinfo URL is not an http(s) location" };
  return { kind: "hit", hit: { upstream, text, info, nar } };
}

async function ask(upstream: Upstream, hash: string, budget: SubrequestBudget): Promise<Answer> {
  if (budget.remaining === 0) return { kind: "skipped" };
  const outcome = await upstreamFetch(upstream, `${upstream.url}/${narInfoKey(hash)}`, {
    method: "GET",
    scope: "cache",
    timeoutMs: NARINFO_TIMEOUT_MS,
    timeoutCovers: "whole",
    budget,
  });
  if (outcome.kind === "failed") return outcome.budgetExhausted ? { kind: "skipped" } : { kind: "failed", reason: outcome.reason };
  const res = outcome.response;
  if (res.status === 404 || res.status === 410 || res.status === 403) {
    await res.body?.cancel();
    return { kind: "absent" };
  }
  if (res.status !== 200) {
    await res.body?.cancel();
    return { kind: "failed", reason: `HTTP ${res.status}` };
  }
  const body = await readSmallText(res, MAX_NARINFO_LENGTH);
  if (body.kind === "failed") return { kind: "failed", reason: body.reason };
  if (body.kind === "garbage") return { kind: "garbage", reason: body.reason };
  return judgeNarInfo(upstream, hash, body.text);
}

function later(ctx: LookupContext, work: Promise<unknown>): Promise<unknown> | undefined {
  if (ctx.defer === undefined) return work;
  ctx.defer(work);
  return undefined;
}

/** The first upstream's valid narinfo for `hash`, or null when none has one. */
export async function lookupNarInfo(hash: string, ctx: LookupContext): Promise<UpstreamHit | null> {
  const { upstreams } = ctx.aggregation;
  if (upstreams.length === 0) return null;

  const memo = await recallNarInfo(ctx.memo, hash);
  if (memo !== null && memo.kind === "miss") return null;
  if (memo !== null && memo.kind === "hit") {
    const upstream = upstreams[memo.upstreamIndex];
    const answer = upstream === undefined ? null : judgeNarInfo(upstream, hash, memo.text);
    if (answer !== null && answer.kind === "hit") return answer.hit;
  }

  const down = await Promise.all(upstreams.map((u) => recallDown(ctx.memo, u.index)));
  let complete = true;
  for (const upstream of upstreams) {
    if (down[upstream.index] === true) continue;
    const answer = await ask(upstream, hash, ctx.budget);
    switch (answer.kind) {
      case "hit":
        await later(ctx, rememberNarInfo(ctx.memo, hash, { kind: "hit", upstreamIndex: upstream.index, text: answer.hit.text }));
        return answer.hit;
      case "absent":
        break;
      case "garbage":
        console.warn(`upstream ${upstream.url} answered garbage for ${hash}.narinfo: ${answer.reason}`);
        break;
      case "failed":
        console.warn(`upstream ${upstream.url} failed for ${hash}.narinfo: ${answer.reason}; skipping it for a while`);
        await later(ctx, rememberDown(ctx.memo, upstream.index));
        break;
      case "skipped":
        complete = false;
        break;
    }
  }
  // A lookup cut short by the subrequest budget proves nothing: not remembered.
  if (complete) await later(ctx, rememberNarInfo(ctx.memo, hash, { kind: "miss" }));
  return null;
}
