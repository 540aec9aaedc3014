// `uploader pin <name> <path>`, `uploader unpin <name>`, `uploader pins`: named pins keep a
// store path and its whole closure in the cache, however old, until they are removed.
// Setting and removing pins takes the Worker's ADMIN_TOKEN (they decide what garbage
// collection may delete); listing them takes the admin token or a write token.
import { PIN_NAME } from "../../src/api/pins.ts";
import { CacheAdmin } from "../cache-admin.ts";
import { UsageError } from "../errors.ts";
import { HttpClient } from "../http.ts";
import { CACHE_OPTIONS, ENV, parseCommandLine, requireToken, resolveCache } from "../settings.ts";
import { resolveStorePaths } from "../store.ts";
import { ADMIN_OPTIONS, HELP_OPTION } from "./flags.ts";

const COMMON = `  --cache <url|name>      the cache's URL, or a name given to login [env ${ENV.cacheUrl}]
  --admin-token <token>   the Worker's ADMIN_TOKEN                  [env ${ENV.adminToken}]`;

interface Command {
  HELP: string;
  run: (args: string[]) => Promise<void>;
}

/** Runs `work` with an admin client of the cache the flags name, closing it after. */
async function withAdmin<T>(
  values: { cache?: string | undefined; "admin-token"?: string | undefined; token?: string | undefined },
  tokenNeeded: "admin" | "any",
  work: (admin: CacheAdmin) => Promise<T>,
): Promise<T> {
  const settings = resolveCache(values);
  const token = requireToken(settings, tokenNeeded);
  const http = new HttpClient({ baseUrl: settings.url, token });
  try {
    return await work(new CacheAdmin(http));
  } finally {
    http.close();
  }
}

function checkName(name: string | undefined): string {
  if (name === undefined) throw new UsageError("no pin name given");
  if (!PIN_NAME.test(name)) throw new UsageError(`pin name "${name}" may only contain letters, digits, ".", "_", "+" and "-" (at most 100)`);
  return name;
}

/** The options part of pin's and unpin's help. */
const NAMED_PIN_OPTIONS = `Options:
${COMMON}
  -h, --help              show this help
`;

/**
 * pin or unpin: --cache, --admin-token and -h, then `count` arguments of which the first
 * is a pin name (checked) before `act` runs.
 */
function namedPinCommand(
  HELP: string,
  args: { count: number; problem: string; usage: string },
  act: (values: { cache?: string | undefined; "admin-token"?: string | undefined }, name: string, positionals: string[]) => Promise<void>,
): Command {
  return {
    HELP,
    async run(argv) {
      const { values, positionals } = parseCommandLine(argv, { ...ADMIN_OPTIONS, ...HELP_OPTION });
      if (values.help) {
        process.stdout.write(HELP);
        return;
      }
      if (positionals.length !== args.count) throw new UsageError(args.problem, args.usage);
      await act(values, checkName(positionals[0]), positionals);
    },
  };
}

export const pin = namedPinCommand(
  `Usage: uploader pin [options] <name> <path>

Keeps <path> (a store path, or a symlink to one such as ./result) and its whole closure in
the cache until \`uploader unpin <name>\`, whatever the retention. The path must be in the
cache already (push it first). Pinning an existing name moves the pin.

${NAMED_PIN_OPTIONS}`,
  { count: 2, problem: "give a pin name and a store path", usage: "usage: uploader pin <name> <path>" },
  async (values, name, [, path]) => {
    const [storePath] = await resolveStorePaths([path!]);
    const { previous } = await withAdmin(values, "admin", (admin) => admin.setPin(name, storePath!));
    process.stderr.write(
      previous === null || previous === storePath ? `pinned ${storePath} as ${name}\n` : `moved pin ${name} from ${previous} to ${storePath}\n`,
    );
  },
);

export const unpin = namedPinCommand(
  `Usage: uploader unpin [options] <name>

Removes the pin <name>; its closure is then kept only while young or used by a kept path.

${NAMED_PIN_OPTIONS}`,
  { count: 1, problem: "give the name of one pin", usage: "usage: uploader unpin <name>" },
  async (values, name) => {
    const removed = await withAdmin(values, "admin", (admin) => admin.removePin(name));
    if (removed === null) throw new UsageError(`there is no pin named ${name}`, "uploader pins lists them");
    process.stderr.write(`removed pin ${name} (${removed.path})\n`);
  },
);

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
      ...ADMIN_OPTIONS,
      token: CACHE_OPTIONS.token,
      json: { type: "boolean" },
      ...HELP_OPTION,
    });
    if (values.help) {
      process.stdout.write(pins.HELP);
      return;
    }
    if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
    const all = await withAdmin(values, "any", (admin) => admin.listPins());
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
  },
};
