// `uploader keygen --name <name>`: a new signing key pair in Nix's format. The secret key
// goes to a file (mode 0600, never overwritten); the public key is printed, ready for
// `trusted-public-keys` and for the Worker's TRUSTED_PUBLIC_KEYS.
import { writeFile } from "node:fs/promises";
import { formatPublicKey, generateKeyPair, publicKeyOf } from "../../src/nix/signature.ts";
import { KeyFileError, UsageError, messageOf } from "../errors.ts";
import { writeNewSecretKeyFile } from "../key-file.ts";
import { ENV, flagOrEnv, parseCommandLine } from "../settings.ts";

/** Key names Nix tools and snix all accept; convention is `<host>-<n>`. */
const KEY_NAME = /^[A-Za-z0-9.-]+$/;


export const HELP = `Usage: uploader keygen --name <name> [options]

Creates an Ed25519 key pair in Nix's own format (the same as
\`nix-store --generate-binary-cache-key\`). The secret key is written to a file that
only you can read; the public key is printed on stdout.

Options:
  --name <name>             the key's name, e.g. cache.example.org-1 (required)
  --secret-key-file <file>  where to write the secret key (default: <name>.secret)
                                                               [env ${ENV.secretKeyFile}]
  --public-key-file <file>  also write the public key to this file
  --json                    print {"name", "publicKey", "secretKeyFile"} as JSON
  -h, --help                show this help

An existing file is never overwritten. Then:
  uploader push --secret-key-file <file> ...       sign what you push
  nix store sign --key-file <file> ...             works with the same file
  trusted-public-keys = ... <printed public key>   in the clients' nix.conf
`;

export async function run(args: string[]): Promise<void> {
  const { values, positionals } = parseCommandLine(args, {
    name: { type: "string" },
    "secret-key-file": { type: "string" },
    "public-key-file": { type: "string" },
    json: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const name = values.name;
  if (!name) throw new UsageError("--name is required", "e.g. uploader keygen --name cache.example.org-1");
  if (!KEY_NAME.test(name)) throw new UsageError(`key name "${name}" may only contain letters, digits, "." and "-"`);
  const secretFile = flagOrEnv(values["secret-key-file"], ENV.secretKeyFile) ?? `${name}.secret`;

  const key = await generateKeyPair(name);
  await writeNewSecretKeyFile(secretFile, key);
  const publicKey = formatPublicKey(publicKeyOf(key));
  const publicFile = values["public-key-file"];
  if (publicFile) {
    try {
      await writeFile(publicFile, publicKey, { flag: "wx" });
    } catch (err) {
      throw new KeyFileError(`secret key written to ${secretFile}, but cannot write ${publicFile}: ${messageOf(err)}`);
    }
  }
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ name, publicKey, secretKeyFile: secretFile })}\n`);
  } else {
    process.stderr.write(`secret key written to ${secretFile} (keep it private); public key:\n`);
    process.stdout.write(`${publicKey}\n`);
  }
}
