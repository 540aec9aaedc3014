// scheduleUploads (run-plan.ts): at most -j large paths and -j × SMALL_PER_JOB paths in all in
// flight; a path starts only after the paths it references started (so waiting never
// deadlocks), and small paths go past large ones waiting for a slot.
import { describe, expect, test } from "vitest";
import { SMALL_PATH_BYTES, SMALL_PER_JOB, scheduleUploads } from "../../uploader/run-plan.ts";
import type { StorePathInfo } from "../../uploader/store.ts";

function path(name: string, narSize: number, references: string[] = []): StorePathInfo {
  const p = `/nix/store/${name.padStart(32, "0")}-${name}`;
  return { path: p, hashPart: name.padStart(32, "0"), narHash: "sha256:x", narSize, references: references.map((r) => `/nix/store/${r.padStart(32, "0")}-${r}`), sigs: [] };
}

const tick = () => new Promise((r) => setTimeout(r, 1));

describe("scheduleUploads", () => {
  test("bounds large paths by -j and all paths by -j × SMALL_PER_JOB; small ones overtake queued large ones", async () => {
    const jobs = 2;
    const paths = [...Array.from({ length: 6 }, (_, i) => path(`large${i}`, SMALL_PATH_BYTES)), ...Array.from({ length: 20 }, (_, i) => path(`small${i}`, 100))];
    let large = 0;
    let all = 0;
    let maxLarge = 0;
    let maxAll = 0;
    const order: string[] = [];
    await scheduleUploads(paths, jobs, async (info) => {
      const isLarge = info.narSize >= SMALL_PATH_BYTES;
      order.push(info.path.slice(44));
      all++;
      if (isLarge) large++;
      maxLarge = Math.max(maxLarge, large);
      maxAll = Math.max(maxAll, all);
      for (let i = 0; i < (isLarge ? 20 : 2); i++) await tick();
      all--;
      if (isLarge) large--;
    });
    expect(order).toHaveLength(26);
    expect(maxLarge).toBe(jobs);
    expect(maxAll).toBe(jobs * SMALL_PER_JOB);
    // Two large ones first, then small ones without waiting for the other large ones.
    expect(order.slice(0, 3)).toEqual(["large0", "large1", "small0"]);
  });

  test("a path starts only after its references started; a chain longer than the pool finishes", async () => {
    const chain = Array.from({ length: 30 }, (_, i) => path(`c${i}`, 100, i === 0 ? [] : [`c${i - 1}`]));
    const started = new Set<string>();
    const done = new Map<string, () => void>();
    const finished = new Map<string, Promise<void>>();
    await scheduleUploads(chain, 1, async (info) => {
      for (const r of info.references) expect(started.has(r)).toBe(true);
      started.add(info.path);
      // Like a narinfo: finishes only after its references finished.
      const own = new Promise<void>((r) => done.set(info.path, r));
      finished.set(info.path, own);
      await Promise.all(info.references.map((r) => finished.get(r)));
      done.get(info.path)!();
    });
    expect(started.size).toBe(30);
  });
});
