// The startup warm-up (src/warm-up.ts): its built-in narinfo must keep passing the checks it
// runs, or the warm-up silently stops compiling them; and it must never fail startup.
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createApp } from "../../src/app.ts";
import { settingsOf, type WorkerEnv } from "../../src/env.ts";
import { warmUp } from "../../src/warm-up.ts";

afterEach(() => vi.restoreAllMocks());

describe("warm-up at module evaluation", () => {
  it("runs the narinfo checks and the app on its built-in inputs without a warning", async () => {
    const warn = vi.spyOn(console, "warn");
    const error = vi.spyOn(console, "error");
    warmUp(createApp(), env as WorkerEnv);
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(warn).not.toHaveBeenCalled();
    expect(error).not.toHaveBeenCalled();
  });

  it("does not throw on settings that do not parse (each request reports them instead)", async () => {
    const broken = { ...(env as WorkerEnv), PRIORITY: "high" } as WorkerEnv;
    expect(() => warmUp(createApp(), broken)).not.toThrow();
    const res = await createApp().fetch(new Request("https://cache.test/nix-cache-info"), broken, { waitUntil: () => {}, passThroughOnException: () => {}, props: {} } as unknown as ExecutionContext);
    expect(res.status).toBe(500);
  });

  it("settings parsed for one Env object serve another with the same values (a request's), and only that", () => {
    const base = env as WorkerEnv;
    const warm = settingsOf({ ...base } as WorkerEnv);
    expect(settingsOf({ ...base } as WorkerEnv)).toBe(warm);
    expect(settingsOf({ ...base, WRITE_TOKEN_CI: "another-token" } as WorkerEnv).writeTokens.map((t) => t.name)).toContain("WRITE_TOKEN_CI");
    expect(settingsOf({ ...base, PRIORITY: "7" } as WorkerEnv).priority).toBe(7);
    // The same text as a number is another value: parsed again, not taken for the string's.
    expect(() => settingsOf({ ...base, PRIORITY: 7 } as unknown as WorkerEnv)).toThrow();
    expect(settingsOf({ ...base } as WorkerEnv)).toEqual(warm);
  });
});
