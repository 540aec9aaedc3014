// Worker tests: run inside workerd with a real local R2 binding (@cloudflare/vitest-plugin).
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";
import { WORKER_TEST_BINDINGS } from "./worker-test-bindings.ts";

const root = new URL("..", import.meta.url).pathname;
// The D1 index's schema, applied by test/worker-setup.ts before every test.
const migrations = await readD1Migrations(`${root}migrations`);

export default defineConfig({
  root,
  plugins: [
    cloudflareTest({
      wrangler: { configPath: `${root}wrangler.toml` },
      miniflare: { bindings: { ...WORKER_TEST_BINDINGS, TEST_MIGRATIONS: migrations }, compatibilityFlags: ["nodejs_compat"] },
    }),
  ],
  test: { include: ["test/worker/**/*.test.ts"], setupFiles: ["test/worker-setup.ts"] },
});
