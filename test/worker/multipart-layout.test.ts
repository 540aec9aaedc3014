// Part layouts (ingest/part-layout.ts): R2's rules hold for every size and request limit,
// and completion accepts exactly the complete sets of parts.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { AppError } from "../../src/errors.ts";
import { checkComplete, expectedPartSize, layoutFor, MAX_OBJECT_BYTES, MAX_PART_BYTES, MAX_PARTS, MIN_PART_BYTES, type PartLayout } from "../../src/ingest/part-layout.ts";

const MiB = 1024 * 1024;

function kindOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof AppError) return e.kind;
    throw e;
  }
  return "ok";
}

function parts(l: PartLayout): Array<{ partNumber: number; size: number }> {
  return Array.from({ length: l.partCount }, (_, i) => ({ partNumber: i + 1, size: expectedPartSize(l, i + 1)! }));
}

describe("layoutFor", () => {
  it("cuts the free plan's default into 64 MiB parts", () => {
    expect(layoutFor(300_000_000, 100 * MiB)).toEqual({ size: 300_000_000, partSize: 64 * MiB, partCount: 5 });
  });

  it("uses parts as large as the limit when the limit is under 64 MiB", () => {
    expect(layoutFor(15 * MiB, 6 * MiB)).toEqual({ size: 15 * MiB, partSize: 6 * MiB, partCount: 3 });
  });

  it("grows parts so that a huge NAR fits in 10,000", () => {
    const l = layoutFor(1024 * 1024 * MiB, 500 * MiB);
    expect(l.partCount).toBeLessThanOrEqual(MAX_PARTS);
    expect(l.partSize).toBeGreaterThan(64 * MiB);
  });

  it("takes a small NAR in one part", () => {
    expect(layoutFor(1000, 100 * MiB)).toEqual({ size: 1000, partSize: 1000, partCount: 1 });
  });

  it("refuses what cannot be cut by R2's rules", () => {
    expect(kindOf(() => layoutFor(0, 100 * MiB))).toBe("bad_request");
    expect(kindOf(() => layoutFor(6 * MiB * 10_001, 6 * MiB))).toBe("payload_too_large");
    expect(kindOf(() => layoutFor(20 * MiB, 4 * MiB))).toBe("payload_too_large");
    expect(kindOf(() => layoutFor(20 * MiB, 100 * MiB, 4 * MiB))).toBe("bad_request");
    expect(kindOf(() => layoutFor(20 * MiB, 10 * MiB, 11 * MiB))).toBe("payload_too_large");
    expect(kindOf(() => layoutFor(6 * 1024 ** 4, 100 * MiB))).toBe("payload_too_large");
  });

  it("always follows R2's rules and the request limit", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 43 }), fc.integer({ min: MIN_PART_BYTES, max: 2 ** 33 }), (size, limit) => {
        let l: PartLayout;
        try {
          l = layoutFor(size, limit);
        } catch (e) {
          // Only when 10,000 parts of the largest allowed size are not enough.
          expect(e).toBeInstanceOf(AppError);
          const largestPart = Math.min(limit, MAX_PART_BYTES);
          expect(size > MAX_PARTS * largestPart || size > MAX_OBJECT_BYTES).toBe(true);
          return;
        }
        expect(l.partCount).toBeLessThanOrEqual(MAX_PARTS);
        expect(l.partSize).toBeLessThanOrEqual(limit);
        if (l.partCount > 1) expect(l.partSize).toBeGreaterThanOrEqual(MIN_PART_BYTES);
        const ps = parts(l);
        expect(ps.reduce((n, p) => n + p.size, 0)).toBe(size);
        const last = ps[ps.length - 1]!.size;
        expect(last).toBeGreaterThan(0);
        expect(last).toBeLessThanOrEqual(l.partSize);
      }),
    );
  });
});

describe("checkComplete", () => {
  const l = layoutFor(15 * MiB + 1, 6 * MiB);

  it("accepts every part once, in order, whatever order they came in", () => {
    const all = parts(l);
    expect(checkComplete(l, [...all].reverse())).toEqual(all);
  });

  it("names the missing parts", () => {
    const all = parts(l);
    expect(() => checkComplete(l, [all[1]!])).toThrow(/parts 1, 3 of 3 not received/);
  });

  it("ignores a part recorded with the wrong size", () => {
    const all = parts(l);
    expect(() => checkComplete(l, [all[0]!, { partNumber: 2, size: 5 }, all[2]!])).toThrow(/part 2 of 3 not received/);
  });
});
