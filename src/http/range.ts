// Single byte ranges (RFC 9110 §14.1.2), parsed by the Worker itself because local R2
// ignores unsatisfiable and malformed ranges (TOOLCHAIN G6):
//
//   Range      = "bytes=" range-spec
//   range-spec = first "-" [ last ]      first..last inclusive, last clamped to the size
//              | "-" suffix              the last `suffix` bytes
//
// Anything else (several ranges, other units, garbage, last < first) is ignored and the
// whole object is served with 200, as RFC 9110 allows. Nix only ever sends `bytes=N-`
// when it resumes an interrupted NAR download.

/** A syntactically valid single range, before the object's size is known. */
export type RangeSpec = { kind: "from"; first: number; last: number | null } | { kind: "suffix"; length: number };

/** A satisfiable range resolved against a size: inclusive byte positions. */
export interface ByteRange {
  start: number;
  end: number;
}

// 15 digits keep every value a safe integer; no object is anywhere near 10^15 bytes.
const SINGLE_RANGE = /^bytes=(?:(\d{1,15})-(\d{1,15})?|-(\d{1,15}))$/;

/** Parses a Range header; null when it is absent or should be ignored. */
export function parseRange(header: string | null): RangeSpec | null {
  if (header === null) return null;
  const m = SINGLE_RANGE.exec(header.trim());
  if (m === null) return null;
  if (m[3] !== undefined) return { kind: "suffix", length: Number(m[3]) };
  const first = Number(m[1]);
  const last = m[2] === undefined ? null : Number(m[2]);
  if (last !== null && last < first) return null;
  return { kind: "from", first, last };
}

/** Resolves a range against the object size; null when it is unsatisfiable (→ 416). */
export function resolveRange(spec: RangeSpec, size: number): ByteRange | null {
  if (spec.kind === "suffix") {
    if (spec.length === 0 || size === 0) return null;
    return { start: Math.max(0, size - spec.length), end: size - 1 };
  }
  if (spec.first >= size) return null;
  return { start: spec.first, end: spec.last === null ? size - 1 : Math.min(spec.last, size - 1) };
}
