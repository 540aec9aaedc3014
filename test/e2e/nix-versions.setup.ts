// vitest globalSetup of the Nix version matrix (project "nix-matrix" in
// test/vitest.node.config.ts; it runs only when a *.matrix.test.ts file is selected):
// builds the chroots the cache lacks, mounts one overlay per Nix version for this run,
// hands their roots to the test files (inject("nixChroots")), and unmounts everything
// when the run ends, whatever happened in between.
//
// A machine that cannot run the matrix (not root, no mmdebstrap, no overlayfs) fails the
// run here with the reason: the matrix is never skipped quietly.
import type { TestProject } from "vitest/node";
import { ChrootRun, matrixPrerequisites, NIX_VERSIONS, type MountedChroot } from "./nix-versions.ts";

declare module "vitest" {
  export interface ProvidedContext {
    nixChroots: MountedChroot[];
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const problem = await matrixPrerequisites();
  if (problem !== null) throw new Error(`cannot run the Nix version matrix: ${problem}`);
  const started = Date.now();
  const run = await ChrootRun.mount(NIX_VERSIONS, (line) => console.log(`[nix-matrix] ${line}`));
  const versions = run.chroots.map((c) => `${c.name} (${c.suite}: Nix ${c.nixVersion})`).join(", ");
  console.log(`[nix-matrix] ${versions} ready in ${Math.round((Date.now() - started) / 1000)} s`);
  project.provide("nixChroots", run.chroots);
  return () => run.unmount();
}
