// The GitHub Actions runner as a JavaScript action sees it: inputs, state shared between the
// action's steps, annotations, and the job summary. Written against the runner's documented
// interface (environment variables and files), so the action needs no @actions/core.
//
//   inputs       INPUT_<NAME> with the name upper-cased and spaces turned into "_" (hyphens
//                stay: `fail-on-error` is INPUT_FAIL-ON-ERROR)
//   state        a `name=value` line appended to the file named by GITHUB_STATE in one step
//                becomes STATE_<name> in the action's later steps (post)
//   annotations  workflow commands on stdout: `::warning::msg`, `::error::msg`,
//                `::notice::msg`, `::add-mask::value`; data is escaped (% CR LF)
//   summary      Markdown appended to the file named by GITHUB_STEP_SUMMARY
//   environment  a `NAME=value` line appended to the file named by GITHUB_ENV sets NAME
//                for every later step of the job (Nix in the build step reads it)
//   outputs      a `name=value` line appended to the file named by GITHUB_OUTPUT is the
//                step's output `name` (steps.<id>.outputs.<name>)

import { appendFileSync } from "node:fs";

export type Env = NodeJS.ProcessEnv;

/** The raw value of an input, trimmed; "" when unset (the runner passes defaults itself). */
export function input(name: string, env: Env = process.env): string {
  return (env[`INPUT_${name.replace(/ /g, "_").toUpperCase()}`] ?? "").trim();
}

/** A boolean input as YAML 1.2's core schema spells it; anything else is an error. */
export function booleanInput(name: string, env: Env = process.env): boolean {
  const value = input(name, env);
  if (["true", "True", "TRUE"].includes(value)) return true;
  if (["false", "False", "FALSE", ""].includes(value)) return false;
  throw new InputError(name, `must be true or false, got "${value}"`);
}

/** An input the workflow author got wrong: reported as an error annotation naming it. */
export class InputError extends Error {
  readonly input: string;
  constructor(inputName: string, problem: string) {
    super(`input "${inputName}" ${problem}`);
    this.name = "InputError";
    this.input = inputName;
  }
}

/** Keeps a value for the action's post step (read back with `state`). */
export function saveState(name: string, value: string, env: Env = process.env): void {
  const file = env.GITHUB_STATE;
  if (!file) throw new Error("GITHUB_STATE is not set: this must run as a step of a GitHub Actions job");
  if (/[\r\n]/.test(value)) throw new Error(`state ${name} must be one line`);
  appendFileSync(file, `${name}=${value}\n`);
}

/** Sets an environment variable for the job's later steps (and this process). */
export function exportVariable(name: string, value: string, env: Env = process.env): void {
  const file = env.GITHUB_ENV;
  if (!file) throw new Error("GITHUB_ENV is not set: this must run as a step of a GitHub Actions job");
  if (/[\r\n]/.test(value)) throw new Error(`environment variable ${name} must be one line`);
  appendFileSync(file, `${name}=${value}\n`);
  env[name] = value;
}

/** Sets one of the action's outputs (action.yml `outputs`); not on a runner, prints it. */
export function setOutput(name: string, value: string, env: Env = process.env): void {
  const file = env.GITHUB_OUTPUT;
  if (/[\r\n]/.test(value)) throw new Error(`output ${name} must be one line`);
  if (file) appendFileSync(file, `${name}=${value}\n`);
  else info(`${name}=${value}`);
}

export function state(name: string, env: Env = process.env): string {
  return env[`STATE_${name}`] ?? "";
}

/** Workflow command data escaping, as the runner decodes it. */
function escapeData(s: string): string {
  return s.replace(/%/g, "%25").replace(/\r/g, "%0D").replace(/\n/g, "%0A");
}

export function warning(message: string): void {
  process.stdout.write(`::warning::${escapeData(message)}\n`);
}

export function error(message: string): void {
  process.stdout.write(`::error::${escapeData(message)}\n`);
}

export function notice(message: string): void {
  process.stdout.write(`::notice::${escapeData(message)}\n`);
}

export function info(message: string): void {
  process.stdout.write(`${message}\n`);
}

/** A collapsible section of the log (`::group::title` … `::endgroup::`). */
export function group(title: string, body: string): void {
  process.stdout.write(`::group::${escapeData(title)}\n${body.endsWith("\n") || body === "" ? body : `${body}\n`}::endgroup::\n`);
}

/** Hides a secret in the rest of the job's logs (secrets from `secrets.*` already are). */
export function mask(value: string): void {
  if (value) process.stdout.write(`::add-mask::${escapeData(value)}\n`);
}

/** Appends Markdown to the job summary; without GITHUB_STEP_SUMMARY (not on a runner), prints it. */
export function appendSummary(markdown: string, env: Env = process.env): void {
  const file = env.GITHUB_STEP_SUMMARY;
  if (file) appendFileSync(file, markdown.endsWith("\n") ? markdown : `${markdown}\n`);
  else info(markdown);
}
