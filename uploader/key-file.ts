// Signing key files in Nix's own format: one line `<name>:<base64 of seed ‖ public key>`
// (PROTOCOL.md §4.2), the same files `nix-store --generate-binary-cache-key` and
// `nix key generate-secret` write and `nix store sign --key-file` reads. The key format
// itself is the core's (signature.ts); this module only reads and writes the files.
import { open, readFile } from "node:fs/promises";
import { parseSecretKey, formatSecretKey, type SecretKey } from "../src/nix/signature.ts";
import { KeyFileError, messageOf } from "./errors.ts";

/** Owner read/write only, as Nix creates secret key files (umask 077). */
const SECRET_FILE_MODE = 0o600;

/** Reads and parses a secret key file; surrounding whitespace (a final newline) is fine. */
export async function readSecretKeyFile(path: string): Promise<SecretKey> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new KeyFileError(
      `cannot read the secret key file ${path}: ${code === "ENOENT" ? "no such file" : messageOf(err)}`,
      "create one with `uploader keygen --name <name>`",
    );
  }
  try {
    return parseSecretKey(text.trim());
  } catch (err) {
    throw new KeyFileError(
      `${path} is not a Nix secret key: ${messageOf(err)}`,
      "expected one line `name:base64`, as written by `uploader keygen` or `nix key generate-secret`",
    );
  }
}

/**
 * Writes a new secret key file with mode 0600, without a trailing newline (as Nix does).
 * Refuses to replace an existing file: losing a signing key cannot be undone.
 */
export async function writeNewSecretKeyFile(path: string, key: SecretKey): Promise<void> {
  let handle;
  try {
    handle = await open(path, "wx", SECRET_FILE_MODE);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EEXIST") {
      throw new KeyFileError(`${path} already exists; not overwriting a key`, "choose another file with --secret-key-file, or delete the old key first");
    }
    throw new KeyFileError(`cannot create ${path}: ${messageOf(err)}`);
  }
  try {
    // The creation mode is filtered by the umask; make sure it is exactly 0600.
    await handle.chmod(SECRET_FILE_MODE);
    await handle.writeFile(formatSecretKey(key), "utf8");
  } finally {
    await handle.close();
  }
}
