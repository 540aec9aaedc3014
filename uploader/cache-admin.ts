// The cache's administration API as the uploader uses it: garbage collection batches
// (`POST /_api/v1/gc`) and pins (`/_api/v1/pins`), through the one HTTP client (http.ts).
// The requests and answers are the contract the Worker shares (src/api/gc.ts, pins.ts).
// Answers are checked for the shape the commands rely on; anything else is a typed error
// saying the URL is probably not a nix-edge-cache Worker.
import { AuthError, EXIT_CACHE, UploaderError } from "./errors.ts";
import type { HttpClient } from "./http.ts";
import { GC_PATH, type GcBatchAnswer, type GcBatchRequest } from "../src/api/gc.ts";
import { CONTENT_TYPE } from "../src/api/media-types.ts";
import { PINS_PATH, pinPath, type Pin, type PinList, type RemovePinAnswer, type SetPinAnswer, type SetPinRequest } from "../src/api/pins.ts";

const ADMIN_HINT = "garbage collection and pin changes need the Worker's ADMIN_TOKEN: pass --admin-token or set NIX_CACHE_ADMIN_TOKEN";

function unexpected(url: URL, what: string): UploaderError {
  return new UploaderError(`${url}: unexpected answer (${what})`, EXIT_CACHE, "is --cache pointing at a nix-edge-cache Worker that supports garbage collection?");
}

function json(body: Buffer, url: URL): unknown {
  try {
    return JSON.parse(body.toString("utf8"));
  } catch {
    throw unexpected(url, "not JSON");
  }
}

/** Re-throws 401s with a hint about the admin token (the client's hint names write tokens). */
function withAdminHint(err: unknown): never {
  if (err instanceof AuthError) throw new AuthError(err.method, err.url, err.status, err.message.replace(/^.*?HTTP \d+: ?/, ""), ADMIN_HINT);
  throw err;
}

export class CacheAdmin {
  readonly http: HttpClient;
  constructor(http: HttpClient) {
    this.http = http;
  }

  /** Runs one batch of garbage collection. */
  async gcBatch(req: GcBatchRequest): Promise<GcBatchAnswer> {
    const body = Buffer.from(JSON.stringify(req), "utf8");
    const path = GC_PATH;
    const res = await this.http
      .request({ method: "POST", path, headers: { "content-type": CONTENT_TYPE.json }, body: { length: body.length, open: () => body } })
      .catch(withAdminHint);
    const answer = json(res.body, this.http.url(path)) as GcBatchAnswer;
    if (typeof answer !== "object" || answer === null || typeof answer.status !== "string" || typeof answer.found !== "object" || typeof answer.totals !== "object") {
      throw unexpected(this.http.url(path), "expected a garbage collection batch's progress");
    }
    return answer;
  }

  async listPins(): Promise<PinList["pins"]> {
    const path = PINS_PATH;
    const res = await this.http.request({ method: "GET", path });
    const answer = json(res.body, this.http.url(path)) as Partial<Record<keyof PinList, unknown>>;
    if (typeof answer !== "object" || answer === null || typeof answer.pins !== "object" || answer.pins === null) {
      throw unexpected(this.http.url(path), 'expected {"pins": {...}}');
    }
    return answer.pins as PinList["pins"];
  }

  /** Pins `storePath` under `name`; returns the path it replaced, if any. */
  async setPin(name: string, storePath: string): Promise<{ previous: string | null }> {
    const path = pinPath(name);
    const body = Buffer.from(JSON.stringify({ path: storePath } satisfies SetPinRequest), "utf8");
    const res = await this.http
      .request({ method: "PUT", path, headers: { "content-type": CONTENT_TYPE.json }, body: { length: body.length, open: () => body } })
      .catch(withAdminHint);
    const answer = json(res.body, this.http.url(path)) as Partial<Record<keyof SetPinAnswer, unknown>>;
    return { previous: typeof answer?.previous === "string" ? answer.previous : null };
  }

  /** Removes the pin `name`; false when there was none. */
  async removePin(name: string): Promise<Pin | null> {
    const path = pinPath(name);
    const res = await this.http.request({ method: "DELETE", path, accept: [404] }).catch(withAdminHint);
    if (res.status === 404) return null;
    const answer = json(res.body, this.http.url(path)) as Partial<Record<keyof RemovePinAnswer, unknown>>;
    if (typeof answer?.path !== "string") throw unexpected(this.http.url(path), "expected the removed pin");
    return { path: answer.path, pinnedAt: Number(answer.pinnedAt) };
  }
}
