// Worker entry point: the Hono app from app.ts handles every request; the cron trigger
// runs scheduled.ts (garbage collection in bounded batches, cleanup of abandoned uploads).
// While the module is evaluated, warm-up.ts runs the hot paths' pure code once, so that
// compiling it is startup work and not the first request's CPU.

import { env } from "cloudflare:workers";
import { createApp } from "./app.ts";
import type { WorkerEnv } from "./env.ts";
import { runScheduled } from "./scheduled.ts";
import { warmUp } from "./warm-up.ts";

const app = createApp();
warmUp(app, env as WorkerEnv);

export default {
  fetch: (request, env, ctx) => app.fetch(request, env, ctx),
  scheduled: (controller, env, ctx) => ctx.waitUntil(runScheduled(env, controller.scheduledTime)),
} satisfies ExportedHandler<WorkerEnv>;
