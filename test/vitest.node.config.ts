// Node-side tests: the pure core, the uploader, and end-to-end tests with a real Nix.
//
// Two projects: "node" (everything that runs on the host, including the end-to-end tests
// with the host's Nix) and "nix-matrix" (test/e2e/*.matrix.test.ts: the end-to-end tests
// run against every Nix version the README claims, each in its own Debian chroot). The
// matrix's globalSetup (building and mounting the chroots, in the background while the
// node project runs first) runs only when a matrix file is selected, so
// `vitest run -c test/vitest.node.config.ts test/uploader/x.test.ts` costs nothing extra;
// `npm run test:nix-matrix` runs the matrix alone.
import { defineConfig } from "vitest/config";

const root = new URL("..", import.meta.url).pathname;
const MATRIX = "test/e2e/**/*.matrix.test.ts";

export default defineConfig({
  root,
  test: {
    environment: "node",
    testTimeout: 120_000,
    hookTimeout: 300_000,
    // e2e files start their own Worker and Nix stores; running them in parallel on a
    // 2-core machine only makes them slower and flakier.
    fileParallelism: false,
    projects: [
      {
        extends: true,
        test: {
          name: "node",
          include: ["test/nix/**/*.test.ts", "test/uploader/**/*.test.ts", "test/e2e/**/*.test.ts"],
          exclude: [MATRIX, "**/node_modules/**"],
          // First: these run while the matrix's chroots are being built and mounted.
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: "nix-matrix",
          include: [MATRIX],
          globalSetup: ["test/e2e/nix-versions.setup.ts"],
          // After the host's tests, which overlap the building of the chroots (a few
          // minutes on a machine that has none; the files wait for them, see
          // matrixChroots in test/e2e/chroot-nix.ts).
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
