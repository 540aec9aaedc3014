// Worker tests: run inside workerd with a real local R2 binding (@cloudflare/vitest-plugin).
import { cloudflareTest } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";
import { WORKER_TEST_BINDINGS } from "./worker-test-bindings.ts";

const root = new URL("..", import.meta.url).pathname;

export default defineConfig({
  root,
  plugins: [
    cloudflareTest({
      wrangler: { configPath: `${root}wrangler.toml` },
      miniflare: { bindings: WORKER_TEST_BINDINGS, compatibilityFlags: ["nodejs_compat"] },
    }),
  ],
  test: { include: ["test/worker/**/*.test.ts"] },
});
