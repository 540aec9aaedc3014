// vitest globalSetup of the Nix version matrix (project "nix-matrix" in
// test/vitest.node.config.ts; it runs only when a *.matrix.test.ts file is selected).
//
// It starts building the chroots the cache lacks and mounting one overlay per Nix version
// for this run, and returns at once: the host's tests (project "node", which runs first)
// go on meanwhile, so a first build (a few minutes) overlaps them instead of holding up
// the whole run. When the mounts are ready (or have failed), a state file says so; the
// matrix test files wait for it (matrixChroots() in chroot-nix.ts). Everything is
// unmounted when the run ends, whatever happened in between.
//
// A machine that cannot run the matrix (not root, no mmdebstrap, no overlayfs) fails the
// run here with the reason: the matrix is never skipped quietly.
import { randomBytes } from "node:crypto";
import { rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestProject } from "vitest/node";
import { ChrootRun, matrixPrerequisites, NIX_VERSIONS, type MountedChroot } from "./nix-versions.ts";

declare module "vitest" {
  export interface ProvidedContext {
    /** The file that says, once it exists, which chroots are mounted (or why none are). */
    nixMatrixState: string;
  }
}

/** What the state file holds. */
export type MatrixState = { chroots: MountedChroot[] } | { error: string };

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const problem = await matrixPrerequisites();
  if (problem !== null) throw new Error(`cannot run the Nix version matrix: ${problem}`);
  const stateFile = join(tmpdir(), `nec-nix-matrix-${process.pid}-${randomBytes(4).toString("hex")}.json`);
  const publish = async (state: MatrixState) => {
    await writeFile(`${stateFile}.tmp`, JSON.stringify(state));
    await rename(`${stateFile}.tmp`, stateFile);
  };
  const started = Date.now();
  const mounting = ChrootRun.mount(NIX_VERSIONS, (line) => console.log(`[nix-matrix] ${line}`)).then(
    async (run) => {
      const versions = run.chroots.map((c) => `${c.name} (${c.suite}: Nix ${c.nixVersion})`).join(", ");
      console.log(`[nix-matrix] ${versions} ready in ${Math.round((Date.now() - started) / 1000)} s`);
      await publish({ chroots: run.chroots });
      return run;
    },
    async (err: unknown) => {
      await publish({ error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
      return null;
    },
  );
  project.provide("nixMatrixState", stateFile);
  return async () => {
    const run = await mounting;
    await run?.unmount();
    await rm(stateFile, { force: true });
  };
}
