// Typed errors of the pure Nix core. Parsers of documents (narinfo, NAR, keys) throw these
// so that callers can tell bad input (a 4xx for the Worker, a clear message for the
// uploader) from bugs; lookups that merely find nothing return null instead.

/** Base class: some input does not follow a Nix format (hash, base64, store path, …). */
export class NixFormatError extends Error {
  override name = "NixFormatError";
}

/** A narinfo document is malformed; `field` names the offending key (e.g. `NarSize`). */
export class NarInfoError extends NixFormatError {
  override name = "NarInfoError";
  readonly field: string;
  constructor(field: string, message: string) {
    super(`narinfo field ${field}: ${message}`);
    this.field = field;
  }
}

/** A NAR is malformed (or cannot be written); `offset` is the byte offset in the NAR. */
export class NarError extends NixFormatError {
  override name = "NarError";
  readonly offset: number;
  constructor(offset: number, message: string) {
    super(`NAR at byte ${offset}: ${message}`);
    this.offset = offset;
  }
}

/** A public or secret signing key (`name:base64`) is malformed or inconsistent. */
export class KeyError extends NixFormatError {
  override name = "KeyError";
}
