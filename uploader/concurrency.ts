// Bounded concurrency: run an async function over a list with at most N calls in flight.
// Items start in list order, which the push relies on: paths are listed references
// first, so a path only ever waits for paths that have already started.

/** Runs `fn` over `items` with at most `limit` calls in flight; the first error wins. */
export async function forEachLimited<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const item = items[next++] as T;
      try {
        await fn(item);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
