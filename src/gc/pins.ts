// Named pins: a pin keeps one store path and its whole closure, however old, until it is
// removed. They are rows of the D1 table `pins` (storage/pins.ts). This module holds what
// is pure about them: the limit, the list API's object, and the format of the
// JSON document `{"pins": {"<name>": {"path": "/nix/store/…", "pinnedAt": ms}}}` in which
// caches from before the table kept them (`_gc/pins.json`, moved into the table on first use).
// The name rule and the API's types are the shared contract (src/api/pins.ts).
//
// In memory the pins are a Map, never an object's properties: a name such as
// `constructor` or `hasOwnProperty` is an ordinary name (absent until set), and no name,
// `__proto__` included, can reach a prototype. JSON.parse stores every key, `__proto__`
// too, as an own property, and only own properties are read from the document.

import { PIN_NAME, type Pin } from "../api/pins.ts";
import { isRecord } from "../json-document.ts";
import { parseStorePath } from "../nix/store-path.ts";

/** Pins by name: what parsePins gives and the routes change. */
export type PinMap = Map<string, Pin>;

/** The `pins` object of the document and of the list API (own properties only). */
export type Pins = Readonly<Record<string, Pin>>;

/** More pins than this in one cache is a mistake (a loop pinning every build). */
export const MAX_PINS = 1000;

/**
 * The pins as the JSON object of the document and the list API, names sorted. The object
 * has no prototype, so every name, whatever it is, becomes an own (serialised) key.
 */
export function pinsObject(pins: ReadonlyMap<string, Pin> | Pins): Record<string, Pin> {
  const entries = pins instanceof Map ? [...pins.entries()] : Object.entries(pins);
  const sorted = Object.create(null) as Record<string, Pin>;
  for (const [name, pin] of entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    sorted[name] = { path: pin.path, pinnedAt: pin.pinnedAt };
  }
  return sorted;
}

/** The pins document, from the map or from a `pins` object (own properties). */
export function formatPins(pins: ReadonlyMap<string, Pin> | Pins): string {
  return JSON.stringify({ pins: pinsObject(pins) });
}


/**
 * The pins in `text`. Entries that are not valid are dropped with a log line rather than
 * failing: a damaged document must not stop garbage collection (it only loses pins).
 */
export function parsePins(text: string): PinMap {
  const pins: PinMap = new Map();
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    console.error("the pins document is not JSON; treating it as empty");
    return pins;
  }
  const raw = isRecord(doc) && Object.hasOwn(doc, "pins") ? doc.pins : undefined;
  if (!isRecord(raw)) return pins;
  for (const [name, value] of Object.entries(raw)) {
    const path = isRecord(value) && Object.hasOwn(value, "path") ? value.path : undefined;
    const pinnedAt = isRecord(value) && Object.hasOwn(value, "pinnedAt") ? value.pinnedAt : undefined;
    if (PIN_NAME.test(name) && typeof path === "string" && parseStorePath(path) !== null && typeof pinnedAt === "number") {
      pins.set(name, { path, pinnedAt });
    } else {
      console.error(`ignoring the invalid pin entry ${JSON.stringify(name)}`);
    }
  }
  return pins;
}
