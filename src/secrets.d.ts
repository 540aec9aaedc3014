// Secrets the Worker reads (set with `wrangler secret put NAME`). wrangler.toml cannot
// declare them without hiding the open-ended WRITE_TOKEN_<anything> family, so their
// types live here and merge into the generated Env (global and Cloudflare.Env).
interface NixEdgeCacheSecrets {
  /** A token allowed to upload. At least one WRITE_TOKEN or WRITE_TOKEN_<name> is needed. */
  WRITE_TOKEN?: string;
  /** When set, reads need this token too (Bearer, or HTTP Basic with it as the password). */
  READ_TOKEN?: string;
  /** A Nix secret key (`name:base64`); the Worker signs every narinfo it stores with it. */
  SIGNING_KEY?: string;
  /** netrc text with credentials for private aggregated upstreams (src/upstream/netrc.ts). */
  AGGREGATE_UPSTREAMS_NETRC?: string;
  /** Optional: the token for garbage collection and pins (`uploader gc`, `uploader pin`). */
  ADMIN_TOKEN?: string;
  /** Further upload tokens, one per pusher, each revocable alone. */
  [key: `WRITE_TOKEN_${string}`]: string | undefined;
}
interface Env extends NixEdgeCacheSecrets {}
declare namespace Cloudflare {
  interface Env extends NixEdgeCacheSecrets {}
}
