// Reading the small JSON documents the Worker keeps for itself (the fence, the collector's
// statistics, pins of older caches): an object, or nothing when the text is not one. A
// damaged document is the caller's to judge (most fail safe by treating it as absent).

/** Whether `value` is a plain JSON object (not null, not an array). */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The JSON object in `text`; null when it does not parse or is not an object. */
export function parseJsonObject(text: string): Record<string, unknown> | null {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return null;
  }
  return isRecord(doc) ? doc : null;
}
