// The push's progress output (progress.ts) as a terminal and a CI log see it: percent and
// ETA from the work done (NAR bytes read, then sent), one speed that keeps counting while
// a large NAR is only being sent, a ✓ line per path on a terminal, and a heartbeat at least
// every HEARTBEAT_MS (under 30 s) in a log when nothing else is printed.
import { PassThrough } from "node:stream";
import { pipeline } from "node:stream/promises";
import { Readable, Writable } from "node:stream";
import { afterEach, describe, expect, test, vi } from "vitest";
import { HEARTBEAT_MS, Progress, formatDuration } from "../../uploader/progress.ts";

afterEach(() => vi.useRealTimers());

/** A fake stderr that keeps what is written. */
function sink(isTTY: boolean): { stream: NodeJS.WriteStream; text: () => string } {
  const out = new PassThrough();
  let text = "";
  out.on("data", (b: Buffer) => (text += b.toString("utf8")));
  Object.assign(out, { isTTY, columns: 200 });
  return { stream: out as unknown as NodeJS.WriteStream, text: () => text };
}

async function flow(progress: Progress, kind: "nar" | "sent", bytes: number): Promise<void> {
  await pipeline(Readable.from([Buffer.alloc(bytes)]), progress.counter(kind), new Writable({ write: (_c, _e, cb) => cb() }));
}

describe("progress", () => {
  test("percent, speed and ETA count reading and sending, so the speed does not fall to 0 while only sending", async () => {
    vi.useFakeTimers({ toFake: ["Date", "setInterval", "clearInterval"] });
    const { stream } = sink(false);
    const p = new Progress({ stream, live: false });
    p.begin(1, 1000);
    await flow(p, "nar", 1000); // read and compressed to ~500 bytes (ratio 0.5 until known)
    vi.advanceTimersByTime(1000);
    expect(p.status()).toMatch(/^\[0\/1\] 50 % · 500 B of 1000 B · \d+ B\/s · ETA 0:0\d · 0 B sent$/);
    vi.advanceTimersByTime(1000);
    await flow(p, "sent", 250);
    vi.advanceTimersByTime(1000);
    const line = p.status();
    expect(line).toMatch(/^\[0\/1\] 75 % · 750 B of 1000 B · /);
    // Only sending happened in the last seconds, and the speed still counts it.
    expect(line).not.toMatch(/ 0 B\/s/);
    expect(line).toContain("250 B sent");
  });

  test("a terminal gets a ✓ line per uploaded path, saying what a resumed upload did not send", () => {
    const { stream, text } = sink(true);
    const p = new Progress({ stream, live: true });
    p.begin(1, 2048);
    p.finished({ path: "/nix/store/00000000000000000000000000000000-a", outcome: "uploaded", narSize: 2048, fileSize: 1024, sentBytes: 24 });
    p.end({ uploaded: 1, alreadyCached: 0, skippedUpstream: 0, failed: 0, blocked: 0, narBytes: 2048, fileBytes: 1024, sentBytes: 24, seconds: 1, paths: [] });
    expect(text()).toContain("✓ /nix/store/00000000000000000000000000000000-a (2.0 KiB -> 1.0 KiB, 1000 B already in the cache)\n");
  });

  test("a log gets the status as a heartbeat when nothing was printed for HEARTBEAT_MS, which is under 30 s", () => {
    expect(HEARTBEAT_MS).toBeLessThanOrEqual(30_000);
    vi.useFakeTimers({ toFake: ["Date", "setInterval", "clearInterval"] });
    const { stream, text } = sink(false);
    const p = new Progress({ stream, live: false });
    p.begin(2, 4096);
    vi.advanceTimersByTime(HEARTBEAT_MS - 1000);
    expect(text()).toBe("");
    vi.advanceTimersByTime(2000);
    expect(text()).toMatch(/^\[0\/2\] 0 % · 0 B of 4\.0 KiB · 0 B\/s · ETA - · 0 B sent\n$/);
    p.log("something else");
    vi.advanceTimersByTime(HEARTBEAT_MS - 1000);
    expect(text().split("\n").filter((l) => l.startsWith("[0/2]"))).toHaveLength(1);
    vi.advanceTimersByTime(2000);
    expect(text().split("\n").filter((l) => l.startsWith("[0/2]"))).toHaveLength(2);
    p.end({ uploaded: 0, alreadyCached: 0, skippedUpstream: 0, failed: 0, blocked: 0, narBytes: 0, fileBytes: 0, seconds: 1, paths: [] });
    vi.advanceTimersByTime(5 * HEARTBEAT_MS);
    expect(text().split("\n").filter((l) => l.startsWith("[0/2]"))).toHaveLength(2);
  });

  test("durations", () => {
    expect(formatDuration(0)).toBe("0:00");
    expect(formatDuration(75)).toBe("1:15");
    expect(formatDuration(3725)).toBe("1:02:05");
    expect(formatDuration(Number.POSITIVE_INFINITY)).toBe("-");
  });
});
