// Loads the golden fixtures under test/fixtures/ (copied from the shared reference so the
// tests never depend on ../shared at run time).
import { readdirSync, readFileSync } from "node:fs";

const FIXTURES = new URL("../fixtures/", import.meta.url);

export interface Vectors {
  nix32: Array<{ label: string; hex: string; nix32: string }>;
  nar: Array<{ label: string; narSize: number; narHash: string; narHashBase16: string; hex: string }>;
  signatures: Array<{
    storePath: string;
    narHash: string;
    narSize: number;
    references: string[];
    publicKey: string;
    sig: string;
    fingerprint: string;
    verifies: boolean;
    reproducedByNodeSigner?: boolean;
  }>;
  keys: { secretKey: string; publicKey: string };
}

export const vectors: Vectors = JSON.parse(readFileSync(new URL("vectors.json", FIXTURES), "utf8"));

/** Every `test/fixtures/narinfo/*.narinfo`, as [file name, text]. */
export function narinfoFixtures(): Array<[string, string]> {
  const dir = new URL("narinfo/", FIXTURES);
  return readdirSync(dir)
    .filter((f) => f.endsWith(".narinfo"))
    .sort()
    .map((f) => [f, readFileSync(new URL(f, dir), "utf8")]);
}
