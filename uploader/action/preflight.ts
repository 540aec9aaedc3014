// The action's first look at the cache, in its main step (before the build): is
// `cache-url` a nix-edge-cache, may `token` write, and which keys sign its narinfos (for
// configuring Nix). One request (GET /_api/v1/cache, uploader/cache-probe.ts), the same the
// uploader's own preflight sends; the messages name the action's inputs, not CLI flags.
import type { CacheDescription } from "../../src/api/cache-description.ts";
import { probeCache, probeClient } from "../cache-probe.ts";
import { NetworkError, UploaderError } from "../errors.ts";

export interface Preflight {
  /** The cache's description; null when the URL is another kind of cache or did not answer. */
  description: CacheDescription | null;
  /** Whether pushing can work: the cache answered and accepts the token for writing. */
  canPush: boolean;
  /** What is wrong, naming the input to fix; empty when nothing is. */
  problems: string[];
  /** Things to know that do not stop the push. */
  notes: string[];
}

export async function checkCache(cacheUrl: string, token: string): Promise<Preflight> {
  const http = probeClient(cacheUrl, token || undefined);
  try {
    const probe = await probeCache(http);
    if (probe.kind === "binary-cache") {
      return {
        description: null,
        canPush: token !== "",
        problems: [],
        notes: [`cache-url ${cacheUrl} is ${probe.note}: the token cannot be checked before the push, and its keys must be given in extra-trusted-public-keys`],
      };
    }
    const d = probe.description;
    if (!token) return { description: d, canPush: false, problems: [], notes: [] };
    if (d.access.write) return { description: d, canPush: true, problems: [], notes: [] };
    // A public cache lets anyone read: its read access says nothing about the token.
    const what = d.access.admin ? "the cache's admin token" : d.private && d.access.read ? "a read token" : "not a write token of the cache";
    return {
      description: d,
      canPush: false,
      problems: [
        `input "token" is ${what}, which may not upload to ${cacheUrl}: nothing will be pushed. ` +
          "Give one of the Worker's WRITE_TOKEN secrets (check the repository secret the workflow passes as token).",
      ],
      notes: [],
    };
  } catch (err) {
    if (!(err instanceof UploaderError)) throw err;
    const hint = err.hint ? ` (${err.hint.replace(/--cache\b/g, "cache-url").replace(/--token\b/g, "token")})` : "";
    // A cache that is only away now may answer by the time there is something to push.
    const away = err instanceof NetworkError;
    return {
      description: null,
      canPush: away && token !== "",
      problems: [`input "cache-url": ${err.message}${hint}${away ? "; the push is tried anyway" : ""}`],
      notes: [],
    };
  } finally {
    http.close();
  }
}
