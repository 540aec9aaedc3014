// AWS credentials for an `s3://` source, looked up as Nix's S3 store looks them up (Nix
// 2.33+: environment first, then the profile; libstore/aws-creds.cc):
//   1. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN);
//   2. the profile named by the URL's `profile=`, else AWS_PROFILE, else `default`, from
//      the shared credentials file (AWS_SHARED_CREDENTIALS_FILE, ~/.aws/credentials:
//      `[name]`) and then the config file (AWS_CONFIG_FILE, ~/.aws/config: `[profile name]`,
//      or `[default]`), keys aws_access_key_id, aws_secret_access_key, aws_session_token.
// With none found the requests go unsigned, as to a bucket with anonymous download; a
// profile named in the URL that exists nowhere is an error. (SSO, web identity, container
// and instance credentials are not looked up.)
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { messageOf } from "../errors.ts";
import { SourceError } from "./cache-source.ts";

export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string | undefined;
  /** Where they came from, for --verbose. */
  from: string;
}

export interface CredentialOptions {
  /** The URL's `profile=`. */
  profile?: string | undefined;
  env?: NodeJS.ProcessEnv;
  home?: string;
}

/** The credentials to sign with, or null for anonymous requests. */
export async function resolveAwsCredentials(options: CredentialOptions = {}): Promise<AwsCredentials | null> {
  const env = options.env ?? process.env;
  const home = options.home ?? homedir();
  const id = env.AWS_ACCESS_KEY_ID;
  const secret = env.AWS_SECRET_ACCESS_KEY;
  if (id && secret) {
    return { accessKeyId: id, secretAccessKey: secret, sessionToken: env.AWS_SESSION_TOKEN || undefined, from: "the environment (AWS_ACCESS_KEY_ID)" };
  }
  const profile = options.profile || env.AWS_PROFILE || "default";
  const credentialsFile = env.AWS_SHARED_CREDENTIALS_FILE || join(home, ".aws", "credentials");
  const configFile = env.AWS_CONFIG_FILE || join(home, ".aws", "config");
  const files: Array<[file: string, section: string]> = [
    [credentialsFile, profile],
    [configFile, profile === "default" ? "default" : `profile ${profile}`],
  ];
  for (const [file, section] of files) {
    const values = parseIni(await readOptional(file))[section];
    if (!values) continue;
    const key = values.aws_access_key_id;
    const secretKey = values.aws_secret_access_key;
    if (key && secretKey) {
      return { accessKeyId: key, secretAccessKey: secretKey, sessionToken: values.aws_session_token || undefined, from: `profile "${profile}" in ${file}` };
    }
  }
  if (options.profile) {
    throw new SourceError(
      `no credentials for the AWS profile "${options.profile}" (looked in ${credentialsFile} and ${configFile})`,
      "add aws_access_key_id and aws_secret_access_key to that profile, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    );
  }
  return null;
}

async function readOptional(file: string): Promise<string> {
  try {
    return await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return "";
    throw new SourceError(`cannot read ${file}: ${messageOf(err)}`);
  }
}

/**
 * The INI dialect of the AWS files: `[section]` headers, `key = value` lines, `#` and `;`
 * comments on their own lines; keys are case-insensitive. Nested (indented) values, used
 * only by settings the uploader does not read, are skipped.
 */
export function parseIni(text: string): Record<string, Record<string, string>> {
  const sections: Record<string, Record<string, string>> = Object.create(null);
  let current: Record<string, string> | undefined;
  for (const raw of text.split(/\r?\n/)) {
    if (/^\s/.test(raw) && current) continue;
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[\s*([^\]]+?)\s*\]$/.exec(line);
    if (header) {
      current = sections[header[1]!] ??= Object.create(null);
      continue;
    }
    const eq = line.indexOf("=");
    if (eq > 0 && current) current[line.slice(0, eq).trim().toLowerCase()] = line.slice(eq + 1).trim();
  }
  return sections;
}
