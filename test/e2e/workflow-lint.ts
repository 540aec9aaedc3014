// A structural lint of GitHub Actions files: workflows (.github/workflows/*.yml, and the
// README's example) and action metadata (uploader/action.yml).
//
// The YAML is parsed by PyYAML (Debian's python3-yaml) with its BaseLoader, which keeps
// every scalar a string: no YAML 1.1 surprises such as `on:` read as a boolean, and the
// checks below see exactly the text GitHub sees. The checks are the mistakes that would
// otherwise only show on GitHub, after a push: keys GitHub does not know (a typo makes a
// setting silently absent), a step with both or neither of `uses` and `run`, an action
// without a pinned ref, `needs` naming no job, a local file (`./…` action, reusable
// workflow, entry point) that is not there, unbalanced `${{ }}`, and shell scripts that
// bash cannot parse.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

export type Yaml = string | Yaml[] | { [key: string]: Yaml };
export type YamlMap = { [key: string]: Yaml };

/** Python interpreters tried in order; the machine's own has Debian's python3-yaml. */
const PYTHONS = ["python3", "/usr/bin/python3"];

const PY_PARSE = `import json, sys, yaml
docs = list(yaml.load_all(sys.stdin.read(), Loader=yaml.BaseLoader))
if len(docs) != 1: raise SystemExit("expected exactly one YAML document, got %d" % len(docs))
json.dump(docs[0], sys.stdout)`;

let python: string | undefined;

function findPython(): string {
  if (python) return python;
  for (const candidate of PYTHONS) {
    try {
      execFileSync(candidate, ["-c", "import yaml"], { stdio: "ignore" });
      python = candidate;
      return candidate;
    } catch {
      // not there, or no yaml module: try the next
    }
  }
  throw new Error("the workflow lint parses YAML with python3's yaml module: apt-get install python3-yaml");
}

/** Parses one YAML document (strings, lists and maps only); throws PyYAML's message on bad YAML. */
export function parseYaml(text: string): Yaml {
  try {
    return JSON.parse(execFileSync(findPython(), ["-c", PY_PARSE], { input: text, encoding: "utf8", stdio: ["pipe", "pipe", "pipe"] })) as Yaml;
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr;
    throw new Error(stderr ? stderr.trim().split("\n").slice(-4).join("\n") : String(err));
  }
}

export function isMap(v: Yaml | undefined): v is YamlMap {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

// Keys GitHub accepts, from its workflow syntax and metadata syntax references.
const WORKFLOW_KEYS = ["name", "run-name", "on", "permissions", "env", "defaults", "concurrency", "jobs"];
const JOB_KEYS = [
  "name", "needs", "if", "runs-on", "environment", "concurrency", "outputs", "env", "defaults", "steps",
  "timeout-minutes", "strategy", "continue-on-error", "container", "services", "permissions",
];
const CALLER_JOB_KEYS = ["name", "needs", "if", "uses", "with", "secrets", "strategy", "concurrency", "permissions"];
const STEP_KEYS = ["id", "if", "name", "uses", "run", "working-directory", "shell", "with", "env", "continue-on-error", "timeout-minutes"];
const EVENTS = [
  "branch_protection_rule", "check_run", "check_suite", "create", "delete", "deployment", "deployment_status",
  "discussion", "discussion_comment", "fork", "gollum", "issue_comment", "issues", "label", "merge_group",
  "milestone", "page_build", "public", "pull_request", "pull_request_review", "pull_request_review_comment",
  "pull_request_target", "push", "registry_package", "release", "repository_dispatch", "schedule", "status",
  "watch", "workflow_call", "workflow_dispatch", "workflow_run",
];
const ACTION_KEYS = ["name", "author", "description", "inputs", "outputs", "runs", "branding"];
const ACTION_INPUT_KEYS = ["description", "required", "default", "deprecationMessage"];
/** A JavaScript action's outputs have only a description (`value` is for composite actions). */
const ACTION_OUTPUT_KEYS = ["description"];
const NODE_RUNS_KEYS = ["using", "main", "pre", "pre-if", "post", "post-if"];
/** Node versions GitHub's runners offer to JavaScript actions today. */
const NODE_RUNTIMES = ["node20", "node24"];

export interface LintContext {
  /** Root that `./…` paths in `uses:` are relative to (the repository). */
  repoRoot: string;
  /** A name for messages. */
  file: string;
}

export function lintWorkflow(doc: Yaml, ctx: LintContext): string[] {
  const problems: string[] = [];
  const at = (where: string, what: string): void => void problems.push(`${ctx.file}: ${where}: ${what}`);
  if (!isMap(doc)) return [`${ctx.file}: not a mapping`];
  unknownKeys(doc, WORKFLOW_KEYS, "top level", at);
  problems.push(...badExpressions(doc, ctx.file));
  const on = doc.on;
  const events = typeof on === "string" ? [on] : Array.isArray(on) ? on : isMap(on) ? Object.keys(on) : [];
  if (events.length === 0) at("on", "no trigger");
  for (const e of events) if (typeof e !== "string" || !EVENTS.includes(e)) at("on", `unknown event ${JSON.stringify(e)}`);
  const jobs = doc.jobs;
  if (!isMap(jobs) || Object.keys(jobs).length === 0) {
    at("jobs", "no jobs");
    return problems;
  }
  for (const [id, job] of Object.entries(jobs)) {
    const where = `jobs.${id}`;
    if (!isMap(job)) {
      at(where, "not a mapping");
      continue;
    }
    const needs = typeof job.needs === "string" ? [job.needs] : Array.isArray(job.needs) ? job.needs : [];
    for (const n of needs) if (typeof n !== "string" || !(n in jobs)) at(`${where}.needs`, `no job ${JSON.stringify(n)}`);
    if (typeof job.uses === "string") {
      unknownKeys(job, CALLER_JOB_KEYS, where, at);
      checkReusableWorkflow(job.uses, ctx, `${where}.uses`, at);
      continue;
    }
    unknownKeys(job, JOB_KEYS, where, at);
    if (job["runs-on"] === undefined) at(where, "no runs-on");
    const timeout = job["timeout-minutes"];
    if (typeof timeout !== "string" || !/^[1-9]\d*$/.test(timeout)) at(where, "no timeout-minutes (a hung job would hold a runner for 6 hours)");
    if (!Array.isArray(job.steps) || job.steps.length === 0) {
      at(where, "no steps");
      continue;
    }
    job.steps.forEach((step, i) => lintStep(step, ctx, `${where}.steps[${i}]`, at));
  }
  return problems;
}

function lintStep(step: Yaml, ctx: LintContext, where: string, at: (w: string, m: string) => void): void {
  if (!isMap(step)) return at(where, "not a mapping");
  unknownKeys(step, STEP_KEYS, where, at);
  const hasUses = typeof step.uses === "string";
  const hasRun = typeof step.run === "string";
  if (hasUses === hasRun) return at(where, "needs exactly one of uses and run");
  if (hasUses) checkActionRef(step.uses as string, ctx, `${where}.uses`, at);
  else {
    if (step.with !== undefined) at(where, "`with` only applies to `uses`");
    const problem = bashSyntax(step.run as string);
    if (problem) at(`${where}.run`, problem);
  }
}

/** `owner/repo[/path]@ref`, or `./path` to a directory holding action.yml, or docker://. */
function checkActionRef(uses: string, ctx: LintContext, where: string, at: (w: string, m: string) => void): void {
  if (uses.startsWith("./")) {
    const dir = join(ctx.repoRoot, uses);
    if (!existsSync(join(dir, "action.yml")) && !existsSync(join(dir, "action.yaml"))) at(where, `no action.yml in ${uses}`);
    return;
  }
  if (uses.startsWith("docker://")) return;
  if (!/^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+(\/[^@\s]+)?@[^@\s]+$/.test(uses)) at(where, `${uses} is not owner/repo[/path]@ref`);
}

function checkReusableWorkflow(uses: string, ctx: LintContext, where: string, at: (w: string, m: string) => void): void {
  if (!uses.startsWith("./")) {
    if (!/^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+\/\.github\/workflows\/[^@]+\.ya?ml@[^@\s]+$/.test(uses)) at(where, `${uses} is not a workflow reference`);
    return;
  }
  const file = join(ctx.repoRoot, uses);
  if (!existsSync(file)) return at(where, `${uses} does not exist`);
  const called = parseYaml(readFileSync(file, "utf8"));
  const on = isMap(called) ? called.on : undefined;
  const triggers = typeof on === "string" ? [on] : Array.isArray(on) ? on : isMap(on) ? Object.keys(on) : [];
  if (!triggers.includes("workflow_call")) at(where, `${uses} has no workflow_call trigger, so it cannot be called`);
}

export function lintAction(doc: Yaml, ctx: LintContext & { actionDir: string }): string[] {
  const problems: string[] = [];
  const at = (where: string, what: string): void => void problems.push(`${ctx.file}: ${where}: ${what}`);
  if (!isMap(doc)) return [`${ctx.file}: not a mapping`];
  unknownKeys(doc, ACTION_KEYS, "top level", at);
  problems.push(...badExpressions(doc, ctx.file));
  for (const k of ["name", "description", "runs"]) if (doc[k] === undefined) at("top level", `${k} is required`);
  if (isMap(doc.inputs)) {
    for (const [name, spec] of Object.entries(doc.inputs)) {
      if (!isMap(spec)) {
        at(`inputs.${name}`, "not a mapping");
        continue;
      }
      unknownKeys(spec, ACTION_INPUT_KEYS, `inputs.${name}`, at);
      if (typeof spec.description !== "string" || spec.description === "") at(`inputs.${name}`, "no description");
      if (spec.required !== undefined && spec.required !== "true" && spec.required !== "false") at(`inputs.${name}.required`, "must be true or false");
    }
  }
  if (doc.outputs !== undefined && !isMap(doc.outputs)) at("outputs", "not a mapping");
  if (isMap(doc.outputs)) {
    for (const [name, spec] of Object.entries(doc.outputs)) {
      if (!isMap(spec)) {
        at(`outputs.${name}`, "not a mapping");
        continue;
      }
      unknownKeys(spec, ACTION_OUTPUT_KEYS, `outputs.${name}`, at);
      if (typeof spec.description !== "string" || spec.description === "") at(`outputs.${name}`, "no description");
    }
  }
  const runs = doc.runs;
  if (isMap(runs)) {
    const using = runs.using;
    if (typeof using !== "string" || !NODE_RUNTIMES.includes(using)) at("runs.using", `expected one of ${NODE_RUNTIMES.join(", ")}`);
    unknownKeys(runs, NODE_RUNS_KEYS, "runs", at);
    if (typeof runs.main !== "string") at("runs", "no main");
    for (const k of ["pre", "main", "post"]) {
      const entry = runs[k];
      if (typeof entry === "string" && !existsSync(join(ctx.actionDir, entry))) at(`runs.${k}`, `${entry} does not exist`);
    }
  }
  return problems;
}

function unknownKeys(map: YamlMap, allowed: readonly string[], where: string, at: (w: string, m: string) => void): void {
  for (const k of Object.keys(map)) if (!allowed.includes(k)) at(where, `unknown key ${JSON.stringify(k)}`);
}

/** Every string value's `${{ … }}` must open and close in pairs. */
function badExpressions(doc: Yaml, file: string, path = ""): string[] {
  if (typeof doc === "string") {
    const opens = doc.split("${{").length - 1;
    const closes = (doc.match(/}}/g) ?? []).length;
    return opens === closes ? [] : [`${file}: ${path}: unbalanced \${{ }} in ${JSON.stringify(doc)}`];
  }
  if (Array.isArray(doc)) return doc.flatMap((v, i) => badExpressions(v, file, `${path}[${i}]`));
  return Object.entries(doc).flatMap(([k, v]) => badExpressions(v, file, path ? `${path}.${k}` : k));
}

/** bash -n on a `run:` script, with each expression replaced by a word as the runner would. */
export function bashSyntax(script: string): string | null {
  const text = script.replace(/\$\{\{[\s\S]*?\}\}/g, "EXPR");
  try {
    execFileSync("bash", ["-n"], { input: text, stdio: ["pipe", "pipe", "pipe"] });
    return null;
  } catch (err) {
    return `bash cannot parse it: ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}`;
  }
}

/** `secrets.NAME` references anywhere in the document. */
export function secretsUsed(doc: Yaml): string[] {
  const found = new Set<string>();
  const walk = (v: Yaml): void => {
    if (typeof v === "string") for (const m of v.matchAll(/secrets\.([A-Za-z_][A-Za-z0-9_]*)/g)) found.add(m[1]!);
    else if (Array.isArray(v)) v.forEach(walk);
    else Object.values(v).forEach(walk);
  };
  walk(doc);
  return [...found].sort();
}
