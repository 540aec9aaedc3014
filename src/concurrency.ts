// Bounded parallelism for batches of I/O, runtime-neutral (Web APIs only), shared by the
// Worker (R2 HEADs, upstream checks: Workers allow only a few simultaneous connections per
// request) and the uploader (paths, parts and existence checks in flight). Items start in
// list order, which the uploader's push relies on: paths are listed references first, so a
// path only ever waits for paths that have already started.

/**
 * Maps `fn` over `items` with at most `limit` calls in flight; results keep input order.
 * The first rejection rejects the whole map (remaining items are not started).
 */
export async function mapConcurrent<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  async function worker(): Promise<void> {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        results[i] = await fn(items[i]!, i);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  }
  const workers = Array.from({ length: Math.min(limit, items.length) }, () => worker());
  await Promise.all(workers);
  return results;
}
