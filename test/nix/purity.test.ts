// src/nix/ is the runtime-neutral core shared by the Worker and the uploader: Web APIs
// only. This test fails when a file there imports node:*, hono, cloudflare:*, anything
// outside src/nix/ other than @noble/*, or mentions R2 types.
import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

const NIX_DIR = new URL("../../src/nix/", import.meta.url);
const files = readdirSync(NIX_DIR).filter((f) => f.endsWith(".ts"));

// Static `import … from "x"`, `export … from "x"`, side-effect `import "x"`, dynamic
// `import("x")` and `require("x")`.
const SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(?\s*|\brequire\s*\(\s*)["'`]([^"'`]+)["'`]/g;

function allowed(spec: string): boolean {
  if (spec.startsWith("@noble/")) return true;
  // Relative imports must stay inside src/nix/ (no "../", no sub-directories needed).
  return /^\.\/[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.ts$/.test(spec);
}

describe("src/nix purity", () => {
  it("has files to check", () => expect(files.length).toBeGreaterThan(0));
  for (const file of files) {
    it(`${file} uses Web APIs only`, () => {
      const text = readFileSync(new URL(file, NIX_DIR), "utf8");
      const specs = [...text.matchAll(SPECIFIER)].map((m) => m[1]!);
      const bad = specs.filter((s) => !allowed(s));
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
  });
});
