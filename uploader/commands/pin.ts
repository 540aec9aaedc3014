// `uploader pin <name> <path>`, `uploader unpin <name>`, `uploader pins`: named pins keep a
// store path and its whole closure in the cache, however old, until they are removed.
// Setting and removing pins takes the Worker's ADMIN_TOKEN (they decide what garbage
// collection may delete); listing them takes the admin token or a write token.
import { PIN_NAME } from "../../src/api/pins.ts";
import { CacheAdmin } from "../cache-admin.ts";
import { UsageError } from "../errors.ts";
import { HttpClient } from "../http.ts";
import { ENV, parseCommandLine, requireToken, resolveCache } from "../settings.ts";
import { resolveStorePaths } from "../store.ts";

const COMMON = `  --cache <url|name>      the cache's URL, or a name given to login [env ${ENV.cacheUrl}]
  --admin-token <token>   the Worker's ADMIN_TOKEN                  [env ${ENV.adminToken}]`;

interface Command {
  HELP: string;
  run: (args: string[]) => Promise<void>;
}

function client(values: { cache?: string | undefined; "admin-token"?: string | undefined; token?: string | undefined }, tokenNeeded: "admin" | "any"): { http: HttpClient; admin: CacheAdmin } {
  const settings = resolveCache(values);
  const token = requireToken(settings, tokenNeeded);
  const http = new HttpClient({ baseUrl: settings.url, token });
  return { http, admin: new CacheAdmin(http) };
}

function checkName(name: string | undefined): string {
  if (name === undefined) throw new UsageError("no pin name given");
  if (!PIN_NAME.test(name)) throw new UsageError(`pin name "${name}" may only contain letters, digits, ".", "_", "+" and "-" (at most 100)`);
  return name;
}

export const pin: Command = {
  HELP: `Usage: uploader pin [options] <name> <path>

Keeps <path> (a store path, or a symlink to one such as ./result) and its whole closure in
the cache until \`uploader unpin <name>\`, whatever the retention. The path must be in the
cache already (push it first). Pinning an existing name moves the pin.

Options:
${COMMON}
  -h, --help              show this help
`,
  async run(args) {
    const { values, positionals } = parseCommandLine(args, {
      cache: { type: "string" },
      "admin-token": { type: "string" },
      help: { type: "boolean", short: "h" },
    });
    if (values.help) {
      process.stdout.write(pin.HELP);
      return;
    }
    if (positionals.length !== 2) throw new UsageError("give a pin name and a store path", "usage: uploader pin <name> <path>");
    const name = checkName(positionals[0]);
    const [storePath] = await resolveStorePaths([positionals[1]!]);
    const { http, admin } = client(values, "admin");
    try {
      const { previous } = await admin.setPin(name, storePath!);
      process.stderr.write(
        previous === null || previous === storePath ? `pinned ${storePath} as ${name}\n` : `moved pin ${name} from ${previous} to ${storePath}\n`,
      );
    } finally {
      http.close();
    }
  },
};

export const unpin: Command = {
  HELP: `Usage: uploader unpin [options] <name>

Removes the pin <name>; its closure is then kept only while young or used by a kept path.

Options:
${COMMON}
  -h, --help              show this help
`,
  async run(args) {
    const { values, positionals } = parseCommandLine(args, {
      cache: { type: "string" },
      "admin-token": { type: "string" },
      help: { type: "boolean", short: "h" },
    });
    if (values.help) {
      process.stdout.write(unpin.HELP);
      return;
    }
    if (positionals.length !== 1) throw new UsageError("give the name of one pin", "usage: uploader unpin <name>");
    const name = checkName(positionals[0]);
    const { http, admin } = client(values, "admin");
    try {
      const removed = await admin.removePin(name);
      if (removed === null) throw new UsageError(`there is no pin named ${name}`, "uploader pins lists them");
      process.stderr.write(`removed pin ${name} (${removed.path})\n`);
    } finally {
      http.close();
    }
  },
};

export const pins: Command = {
  HELP: `Usage: uploader pins [options]

Lists the cache's pins: name, pinned store path, when it was pinned.

Options:
${COMMON}
  --token <token>         or a write token instead of the admin token  [env ${ENV.token}]
  --json                  print the pins as JSON on stdout
  -h, --help              show this help
`,
  async run(args) {
    const { values, positionals } = parseCommandLine(args, {
      cache: { type: "string" },
      "admin-token": { type: "string" },
      token: { type: "string" },
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    });
    if (values.help) {
      process.stdout.write(pins.HELP);
      return;
    }
    if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
    const { http, admin } = client(values, "any");
    try {
      const all = await admin.listPins();
      if (values.json) {
        process.stdout.write(`${JSON.stringify(all, null, 2)}\n`);
        return;
      }
      const names = Object.keys(all).sort();
      if (names.length === 0) process.stdout.write("no pins\n");
      for (const name of names) {
        const p = all[name]!;
        process.stdout.write(`${name}\t${p.path}\t${new Date(p.pinnedAt).toISOString()}\n`);
      }
    } finally {
      http.close();
    }
  },
};
