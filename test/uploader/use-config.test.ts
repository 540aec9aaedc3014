// What `uploader use` writes: nix.conf gains only what it lacks (a substituter listed in
// `substituters` or `extra-substituters`, with or without a trailing slash, counts; keys
// already trusted are not repeated), and a netrc entry replaces the host's old one.
import { describe, expect, test } from "vitest";
import { snippet, withCache, withNetrcEntry } from "../../uploader/commands/use.ts";

const URL = "https://cache.example.com";
const KEY = "cache.example.com-1:wP4fBVS8T6Y6hm9lA7dmo1Xhb0/8vIlHHX2nZpqZnCE=";
const OTHER = "other-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

describe("withCache", () => {
  test("appends the substituter and keys under one comment, to a file with or without a final newline", () => {
    expect(withCache("sandbox = true", URL, [KEY])).toEqual({
      text: `sandbox = true\n# ${URL}, added by uploader use\nextra-substituters = ${URL}\nextra-trusted-public-keys = ${KEY}\n`,
      added: [`extra-substituters = ${URL}`, `extra-trusted-public-keys = ${KEY}`],
    });
    expect(withCache("", URL, [KEY]).text.startsWith("# ")).toBe(true);
  });

  test("adds nothing that is there already, in any of Nix's spellings", () => {
    const conf = `substituters = https://cache.nixos.org/ ${URL}/\ntrusted-public-keys = cache.nixos.org-1:x ${KEY} # comment\n`;
    expect(withCache(conf, URL, [KEY])).toEqual({ text: conf, added: [] });
    const extra = `extra-substituters = ${URL}\nextra-trusted-public-keys = ${KEY}\n`;
    expect(withCache(extra, URL, [KEY, OTHER]).added).toEqual([`extra-trusted-public-keys = ${OTHER}`]);
    // A commented-out line does not count.
    expect(withCache(`# extra-substituters = ${URL}\n`, URL, [KEY]).added).toContain(`extra-substituters = ${URL}`);
  });

  test("names the netrc file once, when asked", () => {
    expect(withCache("", URL, [KEY], "/home/u/.config/nix/netrc").added).toContain("netrc-file = /home/u/.config/nix/netrc");
    expect(withCache("netrc-file = /etc/nix/netrc\n", URL, [KEY], "/x").added).not.toContain("netrc-file = /x");
  });
});

describe("withNetrcEntry", () => {
  test("replaces the host's entry and keeps the others", () => {
    const before = "machine other.example login a password b\nmachine cache.example.com login nix password old\n";
    expect(withNetrcEntry(before, "cache.example.com", "new")).toBe("machine other.example login a password b\nmachine cache.example.com login nix password new\n");
    expect(withNetrcEntry("", "cache.example.com", "t")).toBe("machine cache.example.com login nix password t\n");
    // A host that only starts like ours is someone else's.
    expect(withNetrcEntry("machine cache.example.com.evil login x password y\n", "cache.example.com", "t")).toContain("cache.example.com.evil");
  });
});

test("snippets carry the URL and every key", () => {
  expect(snippet("nix.conf", URL, [KEY, OTHER])).toBe(`extra-substituters = ${URL}\nextra-trusted-public-keys = ${KEY} ${OTHER}\n`);
  expect(snippet("flake", URL, [KEY])).toContain(`nixConfig = {\n    extra-substituters = [ "${URL}" ];\n    extra-trusted-public-keys = [ "${KEY}" ];`);
});
