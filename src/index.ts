// Worker entry point: the Hono app from app.ts handles every request; the cron trigger
// runs scheduled.ts (garbage collection in bounded batches, cleanup of abandoned uploads).

import { createApp } from "./app.ts";
import type { WorkerEnv } from "./env.ts";
import { runScheduled } from "./scheduled.ts";

const app = createApp();

export default {
  fetch: (request, env, ctx) => app.fetch(request, env, ctx),
  scheduled: (controller, env, ctx) => ctx.waitUntil(runScheduled(env, controller.scheduledTime)),
} satisfies ExportedHandler<WorkerEnv>;
