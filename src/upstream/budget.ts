// The subrequest budget of one request. On the free plan a Worker invocation may make 50
// subrequests, and fetch() and Cache API calls (match/put/delete) count alike; past the
// limit they throw. Aggregation spends them on upstream lookups, edge memos and, in the
// background (ctx.waitUntil, same invocation), write-through; every one of those asks the
// budget first, so a request degrades to "not found upstream" instead of failing.

/** Subrequests per invocation on the free plan (fetch and Cache API calls together). */
export const FREE_PLAN_SUBREQUESTS = 50;

/**
 * Subrequests left for code outside aggregation in the same request: the edge cache
 * lookup of the R2 object (object-response.ts) and its background store, with a margin.
 */
const RESERVED_SUBREQUESTS = 4;

export class SubrequestBudget {
  private left: number;

  constructor(limit: number = FREE_PLAN_SUBREQUESTS - RESERVED_SUBREQUESTS) {
    this.left = limit;
  }

  /** Takes `n` subrequests; false (and nothing taken) when fewer are left. */
  take(n = 1): boolean {
    if (this.left < n) return false;
    this.left -= n;
    return true;
  }

  /** Subrequests still available. */
  get remaining(): number {
    return this.left;
  }
}
