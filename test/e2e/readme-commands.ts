// The commands a README shows, and whether Wrangler and the uploader know them.
//
// Code blocks are found by their fence (``` or ```lang, indented or not, as in list items).
// Shell blocks are split into simple commands: lines joined at a trailing backslash,
// comments dropped, split at `&&`, `||`, `;` and `|`, words unquoted, leading VAR=value
// assignments and redirections (`< file`, `> file`) removed.
//
// A command is checked against the tool's own `--help`, walking its subcommands as a user
// would read them: `wrangler r2 --help` must list `wrangler r2 bucket`, which must list
// `wrangler r2 bucket create`; a word that is not a listed subcommand must be a positional
// argument of a command that takes one; every flag must appear in the final command's help.
import { execFile } from "node:child_process";

export interface CodeBlock {
  lang: string;
  text: string;
  /** 1-based line of the opening fence, for messages. */
  line: number;
}

export function codeBlocks(markdown: string): CodeBlock[] {
  const blocks: CodeBlock[] = [];
  const lines = markdown.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```(\S*)\s*$/.exec(lines[i]!);
    if (!open) continue;
    const indent = open[1]!.length;
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length && !/^\s*```\s*$/.test(lines[j]!); j++) body.push(lines[j]!.slice(Math.min(indent, lines[j]!.search(/\S|$/))));
    blocks.push({ lang: open[2]!, text: body.join("\n"), line: i + 1 });
    i = j;
  }
  return blocks;
}

/** The markdown between a `## title` heading and the next heading of the same level. */
export function section(markdown: string, title: string): string {
  const start = markdown.indexOf(`\n## ${title}\n`);
  if (start < 0) throw new Error(`no "## ${title}" section`);
  const next = markdown.indexOf("\n## ", start + 1);
  return markdown.slice(start, next < 0 ? undefined : next);
}

/** Simple commands of a shell block, each as its words. */
export function shellCommands(script: string): string[][] {
  const joined = script.replace(/\\\n/g, " ");
  const commands: string[][] = [];
  for (const rawLine of joined.split("\n")) {
    let words: string[] = [];
    for (const token of tokenize(rawLine)) {
      if (token.op) {
        if (words.length > 0) commands.push(words);
        words = [];
      } else words.push(token.word);
    }
    if (words.length > 0) commands.push(words);
  }
  return commands.map(stripAssignmentsAndRedirections).filter((c) => c.length > 0);
}

type Token = { op: true } | { op: false; word: string };

function tokenize(line: string): Token[] {
  const tokens: Token[] = [];
  let word = "";
  let inWord = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === "#" && !inWord) break;
    if (c === "'" || c === '"') {
      const end = line.indexOf(c, i + 1);
      if (end < 0) throw new Error(`unterminated quote in: ${line}`);
      word += line.slice(i + 1, end);
      inWord = true;
      i = end;
    } else if (/\s/.test(c)) {
      if (inWord) tokens.push({ op: false, word });
      word = "";
      inWord = false;
    } else if (c === ";" || c === "|" || (c === "&" && line[i + 1] === "&")) {
      if (inWord) tokens.push({ op: false, word });
      word = "";
      inWord = false;
      if (line[i + 1] === c) i++;
      tokens.push({ op: true });
    } else {
      word += c;
      inWord = true;
    }
  }
  if (inWord) tokens.push({ op: false, word });
  return tokens;
}

function stripAssignmentsAndRedirections(words: string[]): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < words.length && /^[A-Za-z_][A-Za-z0-9_]*=/.test(words[i]!)) i++;
  for (; i < words.length; i++) {
    const w = words[i]!;
    if (w === "<" || w === ">" || w === ">>" || w === "2>") {
      i++;
      continue;
    }
    if (/^\d?[<>]/.test(w)) continue;
    out.push(w);
  }
  return out;
}

export interface HelpSource {
  /** The tool's help for a command path (e.g. ["r2", "bucket"]), or null if it fails. */
  help(path: readonly string[]): Promise<string | null>;
  /** Subcommand names the help lists under the path. */
  subcommands(help: string, path: readonly string[]): string[];
  /** Positional argument slots the command takes. */
  positionals(help: string): number;
  /** Long and short flags the help mentions, and whether each takes a value. */
  flags(help: string): Map<string, boolean>;
}

/**
 * Problems with one command line of the tool (words after the tool's name): unknown
 * subcommands, extra positionals, unknown flags. Empty when the tool knows it all.
 */
export async function checkCommand(words: readonly string[], source: HelpSource): Promise<string[]> {
  const path: string[] = [];
  let help = await source.help(path);
  if (help === null) return ["the tool's --help failed"];
  const args: string[] = [];
  let i = 0;
  // Subcommands come first; the first word that is not one ends the walk.
  for (; i < words.length; i++) {
    const w = words[i]!;
    if (w.startsWith("-")) break;
    if (!source.subcommands(help, path).includes(w)) break;
    path.push(w);
    help = await source.help(path);
    if (help === null) return [`\`${path.join(" ")} --help\` failed`];
  }
  const problems: string[] = [];
  if (source.subcommands(help, path).length > 0 && source.positionals(help) === 0) {
    const next = words[i];
    problems.push(`"${path.join(" ")}" needs a subcommand${next && !next.startsWith("-") ? `; "${next}" is not one` : ""}`);
    return problems;
  }
  const flags = source.flags(help);
  for (; i < words.length; i++) {
    const w = words[i]!;
    if (w === "--") {
      args.push(...words.slice(i + 1));
      break;
    }
    if (w.startsWith("-") && w !== "-") {
      const name = w.includes("=") ? w.slice(0, w.indexOf("=")) : w;
      if (!flags.has(name)) problems.push(`"${path.join(" ")}" has no flag ${name}`);
      else if (flags.get(name) && !w.includes("=")) i++;
      continue;
    }
    args.push(w);
  }
  const slots = source.positionals(help);
  if (args.length > slots) problems.push(`"${path.join(" ")}" takes ${slots} positional argument(s), got ${args.join(" ")}`);
  return problems;
}

/** The lines of the blank-line-separated paragraph that starts with `heading`, without it. */
function paragraph(help: string, heading: string): string {
  const p = help.split(/\n\s*\n/).find((x) => x.startsWith(heading));
  return p ? p.slice(heading.length) : "";
}

/** A `--help` runner that asks once per command path, however many callers ask at once. */
export function helpRunner(cmd: string, baseArgs: string[], env: NodeJS.ProcessEnv, cwd: string): (path: readonly string[]) => Promise<string | null> {
  const cache = new Map<string, Promise<string | null>>();
  return (path) => {
    const key = path.join(" ");
    let answer = cache.get(key);
    if (!answer) {
      answer = new Promise((resolve) => {
        execFile(cmd, [...baseArgs, ...path, "--help"], { env, cwd, encoding: "utf8" }, (err, stdout) => resolve(err ? null : stdout));
      });
      cache.set(key, answer);
    }
    return answer;
  };
}

/** Wrangler's help (yargs): a usage line, indented `wrangler …` command lines, `OPTIONS` and `GLOBAL FLAGS`. */
export function wranglerHelp(run: (path: readonly string[]) => Promise<string | null>): HelpSource {
  return {
    help: run,
    subcommands: (help, path) => {
      const prefix = ["wrangler", ...path].join(" ");
      // Top-level help groups commands under several headings (ACCOUNT, STORAGE, …).
      return [...help.matchAll(/^ {2,}(wrangler [^\n]*?)(?: {2,}|$)/gm)]
        .map((m) => m[1]!.trim())
        .filter((c) => c.startsWith(`${prefix} `))
        .map((c) => c.slice(prefix.length + 1).split(" ")[0]!)
        .filter((w) => !w.startsWith("<") && !w.startsWith("["));
    },
    positionals: (help) => {
      const usage = help.split("\n")[0] ?? "";
      return (usage.match(/<[^>]+>|\[[^\]]+\]/g) ?? []).length;
    },
    flags: (help) => {
      const flags = new Map<string, boolean>();
      for (const line of [...paragraph(help, "OPTIONS\n").split("\n"), ...paragraph(help, "GLOBAL FLAGS\n").split("\n")]) {
        const takesValue = !/\[boolean\]/.test(line);
        const names = /^\s+((?:-{1,2}[A-Za-z0-9-]+(?:,\s*)?)+)/.exec(line)?.[1] ?? "";
        for (const n of names.split(/,\s*/)) {
          if (!n) continue;
          flags.set(n, takesValue);
          // yargs accepts --no-<flag> for every boolean
          if (!takesValue && n.startsWith("--")) flags.set(`--no-${n.slice(2)}`, false);
        }
      }
      return flags;
    },
  };
}

/** The uploader's help (uploader/cli.ts): `Commands:` list; `Usage:` line; `Options:` list. */
export function uploaderHelp(run: (path: readonly string[]) => Promise<string | null>): HelpSource {
  return {
    help: run,
    subcommands: (help, path) => {
      if (path.length > 0) return [];
      return [...paragraph(help, "Commands:\n").matchAll(/^\s+(\S+)/gm)].map((x) => x[1]!);
    },
    positionals: (help) => {
      const usage = /^Usage: (.*)$/m.exec(help)?.[1] ?? "";
      if (/\.\.\.$/.test(usage) || /<[^>]+>\.\.\./.test(usage)) return Number.POSITIVE_INFINITY;
      return (usage.replace(/--\S+ <[^>]+>/g, "").replace(/\[options\]/g, "").match(/<[^>]+>/g) ?? []).length - (usage.includes("<command>") ? 1 : 0);
    },
    flags: (help) => {
      const flags = new Map<string, boolean>();
      for (const line of paragraph(help, "Options:\n").split("\n")) {
        const spec = /^\s+((?:-{1,2}[A-Za-z0-9-]+(?:,\s*)?)+)(\s+<[^>]+>)?/.exec(line);
        if (!spec) continue;
        for (const n of spec[1]!.split(/,\s*/)) if (n) flags.set(n, Boolean(spec[2]));
      }
      return flags;
    },
  };
}
