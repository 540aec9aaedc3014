// Node-side tests: the pure core, the uploader, and end-to-end tests with a real Nix.
//
// Two projects: "node" (everything that runs on the host, including the end-to-end tests
// with the host's Nix) and "nix-matrix" (test/e2e/*.matrix.test.ts: the end-to-end tests
// run against every Nix version the README claims, each in its own Debian chroot). The
// matrix's globalSetup (building and mounting the chroots) runs only when a matrix file is
// selected, so `vitest run -c test/vitest.node.config.ts test/uploader/x.test.ts` costs
// nothing extra; `npm run test:nix-matrix` runs the matrix alone.
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
        },
      },
      {
        extends: true,
        test: {
          name: "nix-matrix",
          include: [MATRIX],
          globalSetup: ["test/e2e/nix-versions.setup.ts"],
          // Building the three chroots on a machine that has none takes a few minutes.
          hookTimeout: 900_000,
        },
      },
    ],
  },
});
