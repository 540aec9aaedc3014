// The Worker's HTTP application: one Hono router with every route module mounted, a
// settings check in front of everything (a misconfigured deployment fails every request
// with a message naming the setting), one error funnel and a JSON 404 for anything else.
//
// Settings come from the Env passed with each request, so tests can run the same app
// with other settings: `createApp().fetch(request, { ...env, READ_TOKEN: "r" }, ctx)`.
//
// Which module answers which URL:
//   /                                        routes/landing.ts      the landing page
//   /nix-cache-info, /_api/v1/cache          routes/cache-info.ts   what the cache is
//   /<hash32>.narinfo                        routes/narinfo.ts      (miss → upstream-narinfo.ts)
//   /nar/<file>                              routes/nar.ts
//   /upstream/<id>/nar/<file>                routes/upstream-nar.ts NARs of aggregated upstreams
//   /<hash32>.ls, /log/, /realisations/,     routes/documents.ts    documents kept verbatim
//   /build-trace-v2/, /debuginfo/
//   /_api/v1/missing                         routes/missing.ts      which paths to push
//   /_api/v1/multipart/nar/…, /_api/v1/limits routes/multipart.ts   NARs in parts
//   /_api/v1/pins[/<name>]                   routes/pins.ts
//   /_api/v1/gc                              routes/gc.ts           a collection batch
//   /_api/v1/stats                           routes/stats.ts

import { Hono } from "hono";
import { TrieRouter } from "hono/router/trie-router";
import { settingsOf, type WorkerEnv } from "./env.ts";
import { errorResponse, responseForError } from "./errors.ts";
import { cacheInfo } from "./routes/cache-info.ts";
import { documents } from "./routes/documents.ts";
import { gc } from "./routes/gc.ts";
import { landing } from "./routes/landing.ts";
import { missing } from "./routes/missing.ts";
import { multipart } from "./routes/multipart.ts";
import { nar } from "./routes/nar.ts";
import { narinfo } from "./routes/narinfo.ts";
import { pins } from "./routes/pins.ts";
import { stats } from "./routes/stats.ts";
import { upstreamNar } from "./routes/upstream-nar.ts";

export type App = Hono<{ Bindings: WorkerEnv }>;

export function createApp(): App {
  // The trie router, not Hono's default: that one first tries to compile every route into
  // one regular expression, which our regex-constrained segments (e.g. `{[^/]+\.narinfo}`)
  // defeat, then falls back to the trie, and does all of it on the first request of every
  // isolate (about 2 ms of that request's CPU, bench/worker-cpu.ts). The trie takes each
  // route as it is added, i.e. while the module is evaluated (startup, not a request).
  const app: App = new Hono<{ Bindings: WorkerEnv }>({ router: new TrieRouter() });
  app.use("*", async (c, next) => {
    settingsOf(c.env);
    await next();
  });
  app.route("/", cacheInfo);
  app.route("/", narinfo);
  app.route("/", nar);
  app.route("/", upstreamNar);
  app.route("/", documents);
  app.route("/", missing);
  app.route("/", landing);
  app.route("/", stats);
  app.route("/", pins);
  app.route("/", gc);
  app.route("/", multipart);
  app.notFound(() => errorResponse("not_found", "no such resource in this cache"));
  app.onError((err) => responseForError(err));
  return app;
}
