// src/nix/ is the runtime-neutral core shared by the Worker and the uploader, and src/api/
// the HTTP contract they share: Web APIs only. This test fails when a file there imports
// node:*, hono, cloudflare:*, anything outside its directory other than @noble/* (and, for
// src/api/, the core in src/nix/), or mentions R2 types.
import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

const DIRS = [
  { name: "src/nix", url: new URL("../../src/nix/", import.meta.url), core: false },
  { name: "src/api", url: new URL("../../src/api/", import.meta.url), core: true },
];

// Static `import … from "x"`, `export … from "x"`, side-effect `import "x"`, dynamic
// `import("x")` and `require("x")`.
const SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(?\s*|\brequire\s*\(\s*)["'`]([^"'`]+)["'`]/g;

function allowed(spec: string, core = false): boolean {
  if (spec.startsWith("@noble/")) return true;
  // src/api/ may use the core (../nix/<file>.ts), nothing else outside itself.
  if (core && /^\.\.\/nix\/[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.ts$/.test(spec)) return true;
  // Relative imports must stay inside the directory (no "../", no sub-directories needed).
  return /^\.\/[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.ts$/.test(spec);
}

describe.each(DIRS)("$name purity", ({ url, core }) => {
  const files = readdirSync(url).filter((f) => f.endsWith(".ts"));
  it("has files to check", () => expect(files.length).toBeGreaterThan(0));
  for (const file of files) {
    it(`${file} uses Web APIs only`, () => {
      const text = readFileSync(new URL(file, url), "utf8");
      const specs = [...text.matchAll(SPECIFIER)].map((m) => m[1]!);
      const bad = specs.filter((s) => !allowed(s, core));
      expect(bad, `forbidden imports in ${file}`).toEqual([]);
      expect(text, `${file} mentions node:`).not.toMatch(/["'`]node:/);
      expect(text, `${file} mentions hono`).not.toMatch(/["'`]hono/);
      expect(text, `${file} mentions cloudflare:`).not.toMatch(/["'`]cloudflare:/);
      expect(text, `${file} mentions R2 types`).not.toMatch(/\bR2[A-Z]\w*/);
      expect(text, `${file} uses Node's Buffer`).not.toMatch(/\bBuffer\./);
    });
  }
  it("the checker itself catches forbidden imports", () => {
    const sample = `import x from "node:fs";\nimport { y } from "../app.ts";\nexport * from "hono";\nawait import("cloudflare:workers");\nimport "./ok.ts";\nimport { z } from "@noble/ed25519";`;
    const specs = [...sample.matchAll(SPECIFIER)].map((m) => m[1]!);
    expect(specs).toEqual(["node:fs", "../app.ts", "hono", "cloudflare:workers", "./ok.ts", "@noble/ed25519"]);
    expect(specs.filter((s) => !allowed(s))).toEqual(["node:fs", "../app.ts", "hono", "cloudflare:workers"]);
    expect(allowed("../nix/narinfo.ts", true)).toBe(true);
    expect(allowed("../nix/narinfo.ts")).toBe(false);
    expect(allowed("../storage/keys.ts", true)).toBe(false);
  });
});
