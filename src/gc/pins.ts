// Named pins: a pin keeps one store path and its whole closure, however old, until it is
// removed. Pins are few (releases, the current system of a machine), so they live together
// in one small JSON document, `{"pins": {"<name>": {"path": "/nix/store/…", "pinnedAt": ms}}}`,
// updated with conditional writes so two pin changes at once cannot lose one another.

import { parseStorePath } from "../nix/store-path.ts";

export interface Pin {
  /** Full store path. */
  path: string;
  /** When the pin was set (ms). */
  pinnedAt: number;
}

export type Pins = Record<string, Pin>;

/** Pin names: what fits in a URL segment and a log line without quoting. */
export const PIN_NAME = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$/;

/** More pins than this in one cache is a mistake (a loop pinning every build). */
export const MAX_PINS = 1000;

export function formatPins(pins: Pins): string {
  const sorted: Pins = {};
  for (const name of Object.keys(pins).sort()) sorted[name] = pins[name]!;
  return JSON.stringify({ pins: sorted });
}

/**
 * The pins in `text`. Entries that are not valid are dropped with a log line rather than
 * failing: a damaged document must not stop garbage collection (it only loses pins).
 */
export function parsePins(text: string): Pins {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    console.error("the pins document is not JSON; treating it as empty");
    return {};
  }
  const raw = typeof doc === "object" && doc !== null ? (doc as { pins?: unknown }).pins : undefined;
  const pins: Pins = {};
  if (typeof raw !== "object" || raw === null) return pins;
  for (const [name, value] of Object.entries(raw as Record<string, unknown>)) {
    const pin = value as Partial<Pin> | null;
    if (PIN_NAME.test(name) && pin && typeof pin.path === "string" && parseStorePath(pin.path) !== null && typeof pin.pinnedAt === "number") {
      pins[name] = { path: pin.path, pinnedAt: pin.pinnedAt };
    } else {
      console.error(`ignoring the invalid pin entry ${JSON.stringify(name)}`);
    }
  }
  return pins;
}

/** Hash parts of every pinned path (the collection's roots besides young paths). */
export function pinnedHashes(pins: Pins): string[] {
  return Object.values(pins).map((p) => parseStorePath(p.path)!.hash);
}
