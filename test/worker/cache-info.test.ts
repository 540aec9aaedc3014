// /nix-cache-info: the document Nix reads first, public even for a private cache.
import { reset } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { basic, bearer, call, callWith, keys, TEST_WRITE_TOKEN } from "../helpers/worker.ts";

afterEach(() => reset());

describe("GET /nix-cache-info", () => {
  it("announces the store dir, mass query and the default priority after cache.nixos.org's 40", async () => {
    const res = await call("/nix-cache-info");
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Type")).toBe("text/x-nix-cache-info");
    expect(await res.text()).toBe("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 50\n");
  });

  it("takes Priority from PRIORITY", async () => {
    const res = await callWith({ PRIORITY: "7" }, "/nix-cache-info");
    expect(await res.text()).toBe("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 7\n");
  });

  it("defaults Priority to 50 when PRIORITY is empty", async () => {
    const res = await callWith({ PRIORITY: "" }, "/nix-cache-info");
    expect(await res.text()).toContain("Priority: 50\n");
  });

  it("answers HEAD with the headers and no body", async () => {
    const res = await call("/nix-cache-info", { method: "HEAD" });
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Type")).toBe("text/x-nix-cache-info");
    expect(await res.text()).toBe("");
  });

  it("stays public when READ_TOKEN makes the rest private", async () => {
    const res = await callWith({ READ_TOKEN: "read-secret" }, "/nix-cache-info");
    expect(res.status).toBe(200);
    expect(await res.text()).toContain("StoreDir: /nix/store\n");
  });

  it("ignores credentials, even malformed ones", async () => {
    const res = await call("/nix-cache-info", { headers: { Authorization: "Basic !!!" } });
    expect(res.status).toBe(200);
  });
});

describe("PUT /nix-cache-info", () => {
  it("accepts an authorised PUT as a no-op (Nix sends one to a cache it thinks is empty)", async () => {
    const res = await call("/nix-cache-info", {
      method: "PUT",
      body: "StoreDir: /nix/store\n",
      headers: { ...basic(TEST_WRITE_TOKEN), "Content-Type": "text/x-nix-cache-info" },
    });
    expect(res.status).toBe(204);
    expect(await keys()).toEqual([]);
    expect(await (await call("/nix-cache-info")).text()).toContain("Priority: 50\n");
  });

  it("refuses a PUT without a write token", async () => {
    const res = await call("/nix-cache-info", { method: "PUT", body: "StoreDir: /nix/store\n" });
    expect(res.status).toBe(401);
    expect(res.headers.get("WWW-Authenticate")).toContain('Basic realm="nix-edge-cache"');
  });

  it("refuses a PUT with a wrong token", async () => {
    const res = await call("/nix-cache-info", { method: "PUT", body: "x", headers: bearer("nope") });
    expect(res.status).toBe(401);
  });
});

describe("misconfiguration fails every request with a message naming the setting", () => {
  it.each([
    [{ PRIORITY: "high" }, "PRIORITY"],
    [{ TRUSTED_PUBLIC_KEYS: "not-a-key" }, "TRUSTED_PUBLIC_KEYS"],
    [{ UPSTREAM_CACHES: "ftp://example.org" }, "UPSTREAM_CACHES"],
    [{ SIGNING_KEY: "k:AAAA" }, "SIGNING_KEY"],
    [{ WRITE_TOKEN: "", WRITE_TOKEN_CI: "  " }, "WRITE_TOKEN"],
    [{ MAX_NAR_UPLOAD_BYTES: "-1" }, "MAX_NAR_UPLOAD_BYTES"],
  ])("%o", async (overrides, setting) => {
    const res = await callWith(overrides, "/nix-cache-info");
    expect(res.status).toBe(500);
    const body = await res.text();
    expect(body).toContain(setting);
    // A secret's value never appears in the message.
    if ("SIGNING_KEY" in overrides) expect(body).not.toContain("AAAA");
  });
});
