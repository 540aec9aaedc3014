// Node-side tests: the pure core, the uploader, and end-to-end tests with a real Nix.
import { defineConfig } from "vitest/config";

const root = new URL("..", import.meta.url).pathname;

export default defineConfig({
  root,
  test: {
    include: ["test/nix/**/*.test.ts", "test/uploader/**/*.test.ts", "test/e2e/**/*.test.ts"],
    environment: "node",
    testTimeout: 120_000,
    hookTimeout: 300_000,
    // e2e files start their own Worker and Nix stores; running them in parallel on a
    // 2-core machine only makes them slower and flakier.
    fileParallelism: false,
  },
});
