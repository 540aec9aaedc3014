// The action's committed bundles (uploader/action/dist/, what GitHub runs) against its
// sources: a bundle that is not what `npm run build:action` makes of the current sources
// fails here, so a change to the action or the uploader cannot ship with a stale bundle.
import { cp, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BUNDLES, DIST_DIR, staleBundles } from "../../uploader/action/build.ts";

let scratch: string;

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "nec-bundle-"));
});

afterAll(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

describe("the action's bundles", () => {
  it("are what the build makes of the current sources (npm run build:action, then commit uploader/action/dist/)", async () => {
    expect(await staleBundles(), "run npm run build:action and commit uploader/action/dist/").toEqual([]);
    expect((await readdir(DIST_DIR)).sort()).toEqual(Object.keys(BUNDLES).sort());
  });

  it("are reported when one differs by a byte, or is missing", async () => {
    const copy = join(scratch, "dist");
    await cp(DIST_DIR, copy, { recursive: true });
    const main = join(copy, "main.js");
    const text = await readFile(main, "utf8");
    await writeFile(main, text.replace("nix-edge-cache:", "nix-edge-cachE:"));
    await rm(join(copy, "uploader.js"));
    expect(await staleBundles(copy)).toEqual(["main.js", "uploader.js"]);
  });

  it("import nothing but Node's own modules, so a job installs nothing", async () => {
    for (const name of Object.keys(BUNDLES)) {
      const text = await readFile(join(DIST_DIR, name), "utf8");
      const specifiers = [...text.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*)"([^"]+)"/g)].map((m) => m[1]!);
      expect(specifiers.length, name).toBeGreaterThan(0);
      expect(specifiers.filter((s) => !s.startsWith("node:")), name).toEqual([]);
      // Every module from inside the checkout (a path outside it would differ between clones).
      const modules = [...text.matchAll(/^\/\/ (\S+\.[cm]?[jt]s)$/gm)].map((m) => m[1]!);
      expect(modules.length, name).toBeGreaterThan(0);
      expect(modules.filter((m) => m.startsWith("../") || m.startsWith("/")), name).toEqual([]);
    }
  });
});
