// The wire contract of the pins API: named roots that garbage collection keeps with their
// whole closure. The Worker's routes (src/routes/pins.ts) answer it, the uploader
// (uploader/cache-admin.ts, `uploader pin`/`unpin`/`pins`) asks it, both with these types
// and the one name rule.
//
//   GET    /_api/v1/pins          → {"pins": {"<name>": {"path", "pinnedAt"}}}   write or admin token
//   PUT    /_api/v1/pins/<name>   {"path": "/nix/store/<hash>-<name>"}           admin token
//          → 201 (new) or 200 (moved) {"name", "path", "pinnedAt", "previous"?}
//   DELETE /_api/v1/pins/<name>   → 200 {"name", "path", "pinnedAt"}; 404 when absent   admin token

/** The path below the cache's URL (relative: caches may live under a prefix). */
export const PINS_PATH = "_api/v1/pins";

/** The path of the pin `name` (a valid pin name needs no escaping; any other is escaped). */
export function pinPath(name: string): string {
  return `${PINS_PATH}/${encodeURIComponent(name)}`;
}

/** Pin names: what fits in a URL segment and a log line without quoting. */
export const PIN_NAME = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$/;

export interface Pin {
  /** Full store path. */
  path: string;
  /** When the pin was set (ms). */
  pinnedAt: number;
}

/** `GET /_api/v1/pins`: every pin by name. */
export interface PinList {
  pins: Record<string, Pin>;
}

/** `PUT /_api/v1/pins/<name>`'s body. */
export interface SetPinRequest {
  path: string;
}

/** `PUT /_api/v1/pins/<name>`'s answer: `previous` is the path a moved pin held before. */
export interface SetPinAnswer extends Pin {
  name: string;
  previous?: string;
}

/** `DELETE /_api/v1/pins/<name>`'s answer: the removed pin. */
export interface RemovePinAnswer extends Pin {
  name: string;
}
