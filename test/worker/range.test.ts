// Range header parsing and resolution (the Worker's own, since local R2 ignores bad ranges).
import { describe, expect, it } from "vitest";
import { parseRange, resolveRange } from "../../src/http/range.ts";

describe("parseRange", () => {
  it.each([
    ["bytes=0-0", { kind: "from", first: 0, last: 0 }],
    ["bytes=5-", { kind: "from", first: 5, last: null }],
    ["bytes=-7", { kind: "suffix", length: 7 }],
    [" bytes=1-2 ", { kind: "from", first: 1, last: 2 }],
  ])("%s", (header, spec) => {
    expect(parseRange(header)).toEqual(spec);
  });

  it.each([[null], [""], ["bytes="], ["bytes=-"], ["bytes=2-1"], ["bytes=0-1,3-4"], ["bytes=a-b"], ["Bytes=0-1"], ["items=0-1"], ["bytes=1234567890123456-"]])(
    "ignores %o",
    (header) => {
      expect(parseRange(header)).toBeNull();
    },
  );
});

describe("resolveRange", () => {
  it("clamps the end and computes suffixes", () => {
    expect(resolveRange({ kind: "from", first: 2, last: 100 }, 10)).toEqual({ start: 2, end: 9 });
    expect(resolveRange({ kind: "from", first: 2, last: null }, 10)).toEqual({ start: 2, end: 9 });
    expect(resolveRange({ kind: "suffix", length: 3 }, 10)).toEqual({ start: 7, end: 9 });
    expect(resolveRange({ kind: "suffix", length: 30 }, 10)).toEqual({ start: 0, end: 9 });
  });

  it("finds unsatisfiable ranges", () => {
    expect(resolveRange({ kind: "from", first: 10, last: null }, 10)).toBeNull();
    expect(resolveRange({ kind: "suffix", length: 0 }, 10)).toBeNull();
    expect(resolveRange({ kind: "suffix", length: 5 }, 0)).toBeNull();
  });
});
