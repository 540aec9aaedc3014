// GET /: the landing page (landing-page.ts) for people who open the cache's URL in a
// browser. It follows the read rule (a private cache asks for the read token with a Basic
// challenge, which browsers answer with a password prompt) and costs one D1 query (the
// statistics). The URL shown is the request's own origin, so the snippets are right
// whichever domain or port the cache is reached on.

import { Hono } from "hono";
import { settingsOf, type WorkerEnv } from "../env.ts";
import { requireRead } from "../middleware/auth.ts";
import { formatPublicKey, publicKeyOf } from "../nix/signature.ts";
import { loadStatsView } from "../gc/stats.ts";
import { renderLandingPage } from "../landing-page.ts";

export const landing = new Hono<{ Bindings: WorkerEnv }>();

/** Only inline styles; nothing is loaded from anywhere. */
const CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** Statistics change once per collection: a minute in shared caches is harmless. */
const LANDING_MAX_AGE_SECONDS = 60;

const DAY_MS = 24 * 3600 * 1000;

landing.get("/", requireRead, async (c) => {
  const settings = settingsOf(c.env);
  const keys = [
    ...(settings.signingKey === null ? [] : [formatPublicKey(publicKeyOf(settings.signingKey))]),
    ...settings.trustedKeys.map(formatPublicKey),
  ];
  const html = renderLandingPage({
    origin: new URL(c.req.url).origin,
    publicKeys: [...new Set(keys)],
    priority: settings.priority,
    isPrivate: settings.readToken !== null,
    aggregated: settings.aggregation.upstreams.map((u) => u.url),
    referenced: settings.upstreamCaches,
    retentionDays: settings.gc.retentionMs === null ? null : settings.gc.retentionMs / DAY_MS,
    stats: await loadStatsView(c.env.DB),
  });
  return new Response(html, {
    headers: {
      "Content-Type": "text/html; charset=utf-8",
      "Cache-Control": settings.readToken === null ? `public, max-age=${LANDING_MAX_AGE_SECONDS}` : "private, no-store",
      "Content-Security-Policy": CONTENT_SECURITY_POLICY,
      "X-Content-Type-Options": "nosniff",
    },
  });
});
