// Worker entry point: the Hono app from app.ts handles every request.

import { createApp } from "./app.ts";
import type { WorkerEnv } from "./env.ts";

const app = createApp();

export default {
  fetch: (request, env, ctx) => app.fetch(request, env, ctx),
} satisfies ExportedHandler<WorkerEnv>;
