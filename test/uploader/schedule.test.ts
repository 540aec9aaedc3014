// scheduleUploads (run-plan.ts): at most -j large paths and, besides them, -j × SMALL_PER_JOB
// small ones in flight; a path starts only after the paths it references started (so
// waiting never deadlocks), and each kind goes past the other's paths waiting for a slot.
import { describe, expect, test } from "vitest";
import { SMALL_PATH_BYTES, SMALL_PER_JOB, scheduleUploads } from "../../uploader/run-plan.ts";
import type { StorePathInfo } from "../../uploader/store.ts";

function path(name: string, narSize: number, references: string[] = []): StorePathInfo {
  const p = `/nix/store/${name.padStart(32, "0")}-${name}`;
  return { path: p, hashPart: name.padStart(32, "0"), narHash: "sha256:x", narSize, references: references.map((r) => `/nix/store/${r.padStart(32, "0")}-${r}`), sigs: [] };
}

const tick = () => new Promise((r) => setTimeout(r, 1));

describe("scheduleUploads", () => {
  test("bounds large paths by -j and small ones by -j × SMALL_PER_JOB besides them; small ones overtake queued large ones", async () => {
    const jobs = 2;
    const paths = [...Array.from({ length: 6 }, (_, i) => path(`large${i}`, SMALL_PATH_BYTES)), ...Array.from({ length: 20 }, (_, i) => path(`small${i}`, 100))];
    let large = 0;
    let small = 0;
    let maxLarge = 0;
    let maxSmall = 0;
    const order: string[] = [];
    await scheduleUploads(paths, jobs, async (info) => {
      const isLarge = info.narSize >= SMALL_PATH_BYTES;
      order.push(info.path.slice(44));
      if (isLarge) large++;
      else small++;
      maxLarge = Math.max(maxLarge, large);
      maxSmall = Math.max(maxSmall, small);
      for (let i = 0; i < (isLarge ? 20 : 2); i++) await tick();
      if (isLarge) large--;
      else small--;
    });
    expect(order).toHaveLength(26);
    expect(maxLarge).toBe(jobs);
    expect(maxSmall).toBe(jobs * SMALL_PER_JOB);
    // Two large ones first, then small ones without waiting for the other large ones.
    expect(order.slice(0, 3)).toEqual(["large0", "large1", "small0"]);
  });

  test("large paths listed after many small ones start at once, alongside them", async () => {
    const jobs = 2;
    const paths = [...Array.from({ length: 20 }, (_, i) => path(`small${i}`, 100)), ...Array.from({ length: 3 }, (_, i) => path(`large${i}`, SMALL_PATH_BYTES))];
    const inFlight = new Set<string>();
    const startedWith = new Map<string, number>();
    await scheduleUploads(paths, jobs, async (info) => {
      inFlight.add(info.path);
      startedWith.set(info.path.slice(44), inFlight.size);
      for (let i = 0; i < 3; i++) await tick();
      inFlight.delete(info.path);
    });
    // Both slots for large paths fill in the first pump, beside the small ones' slots:
    // the first two large paths start while all of the small slots are busy.
    expect(startedWith.get("large0")).toBe(jobs * SMALL_PER_JOB + 1);
    expect(startedWith.get("large1")).toBe(jobs * SMALL_PER_JOB + 2);
    expect(startedWith.size).toBe(23);
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
