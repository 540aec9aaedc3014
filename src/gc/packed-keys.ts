// Packed keys: a list of fixed-width keys (hash parts, NAR file hashes) stored as one string,
// the keys concatenated without separators. The collector keeps its queues this way in the
// state document (32 characters a path, no JSON array to parse), and the fence holds its
// paths and NARs this way, sorted, so an upload finds a key by bisection without parsing
// (gc/fence.ts).

/** Whether the sorted concatenation `packed` of `width`-character keys contains `key`. */
export function packedContains(packed: string, width: number, key: string): boolean {
  if (key.length !== width) return false;
  let lo = 0;
  let hi = packed.length / width;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const probe = packed.slice(mid * width, mid * width + width);
    if (probe === key) return true;
    if (probe < key) lo = mid + 1;
    else hi = mid;
  }
  return false;
}

/** `packed` (concatenated `width`-character keys) in ascending order, without repeats. */
export function sortedPacked(packed: string, width: number): string {
  let sorted = true;
  for (let i = width; i < packed.length && sorted; i += width) {
    if (packed.slice(i - width, i) >= packed.slice(i, i + width)) sorted = false;
  }
  if (sorted) return packed;
  const keys: string[] = [];
  for (let i = 0; i < packed.length; i += width) keys.push(packed.slice(i, i + width));
  return [...new Set(keys)].sort().join("");
}

/** How many `width`-character keys `packed` holds. */
export function packedCount(packed: string, width: number): number {
  return packed.length / width;
}

/** The first `count` keys of `packed`. */
export function firstPacked(packed: string, width: number, count: number): string[] {
  const keys: string[] = [];
  for (let i = 0; i < count; i++) keys.push(packed.slice(i * width, (i + 1) * width));
  return keys;
}

/** `packed` without its first `count` keys. */
export function dropPacked(packed: string, width: number, count: number): string {
  return packed.slice(count * width);
}
