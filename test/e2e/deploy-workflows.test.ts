// The GitHub Actions files: the project's workflows (.github/workflows), the README's
// example workflow for a flake repository, and the action's metadata (uploader/action.yml).
//
// They only run on GitHub, so mistakes would show after a push; workflow-lint.ts checks
// their structure here (keys GitHub knows, steps, refs, local files, shell syntax), and
// this file checks what they are for: the test workflow runs the README's test command on
// pull requests, the deploy workflow tests before it deploys with the two documented
// secrets, and the action's declared inputs are exactly the ones its code reads.
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { PROJECT_ROOT } from "./harness.ts";
import { codeBlocks, section } from "./readme-commands.ts";
import { bashSyntax, isMap, lintAction, lintWorkflow, parseYaml, secretsUsed, type Yaml, type YamlMap } from "./workflow-lint.ts";

const WORKFLOWS = join(PROJECT_ROOT, ".github", "workflows");
const ACTION_DIR = join(PROJECT_ROOT, "uploader");

async function load(file: string): Promise<YamlMap> {
  const doc = parseYaml(await readFile(file, "utf8"));
  if (!isMap(doc)) throw new Error(`${file} is not a mapping`);
  return doc;
}

function jobs(doc: YamlMap): Record<string, YamlMap> {
  return doc.jobs as Record<string, YamlMap>;
}

function steps(job: YamlMap): YamlMap[] {
  return (job.steps ?? []) as YamlMap[];
}

function triggers(doc: YamlMap): YamlMap {
  const on = doc.on;
  if (typeof on === "string") return { [on]: "" };
  if (Array.isArray(on)) return Object.fromEntries(on.map((e) => [e as string, ""]));
  return on as YamlMap;
}

async function readmeExample(): Promise<Yaml> {
  const readme = await readFile(join(PROJECT_ROOT, "README.md"), "utf8");
  const blocks = codeBlocks(section(readme, "Pushing from GitHub Actions")).filter((b) => b.lang === "yaml");
  expect(blocks).toHaveLength(1);
  return parseYaml(blocks[0]!.text);
}

describe("the workflow lint itself", () => {
  const ctx = { repoRoot: PROJECT_ROOT, file: "seeded.yml" };
  const valid = `name: ok
on: [push]
jobs:
  a:
    runs-on: ubuntu-24.04
    timeout-minutes: 5
    steps:
      - uses: actions/checkout@v5
      - run: echo hi
`;

  it("passes a valid workflow", () => {
    expect(lintWorkflow(parseYaml(valid), ctx)).toEqual([]);
  });

  it.each([
    ["a misspelt key", valid.replace("runs-on", "runs_on"), /unknown key "runs_on"/],
    ["an unknown event", valid.replace("[push]", "[pushh]"), /unknown event "pushh"/],
    ["an action without a ref", valid.replace("actions/checkout@v5", "actions/checkout"), /not owner\/repo/],
    ["a step with uses and run", valid.replace("      - run: echo hi", "        run: echo hi"), /exactly one of uses and run/],
    ["needs naming no job", valid.replace("    runs-on", "    needs: b\n    runs-on"), /no job "b"/],
    ["a missing timeout", valid.replace("    timeout-minutes: 5\n", ""), /timeout-minutes/],
    ["a local action that is not there", valid.replace("actions/checkout@v5", "./no-such-action"), /no action.yml/],
    ["a shell script bash cannot parse", valid.replace("echo hi", "if true; then echo hi"), /bash cannot parse/],
    ["an unclosed expression", valid.replace("echo hi", "echo ${{ github.sha"), /unbalanced/],
  ])("reports %s", (_what, text, message) => {
    expect(lintWorkflow(parseYaml(text), ctx).join("\n")).toMatch(message);
  });

  it("rejects YAML that does not parse", () => {
    expect(() => parseYaml("a: [1, 2\nb: 3\n")).toThrow();
  });

  it("keeps `on` a string key and every scalar a string, as GitHub reads them", () => {
    expect(parseYaml("on: push\nx: true\nn: 08\n")).toEqual({ on: "push", x: "true", n: "08" });
  });

  it("checks shell syntax with bash, expressions replaced", () => {
    expect(bashSyntax('for f in a b; do echo "${{ matrix.x }}"; done')).toBeNull();
    expect(bashSyntax("echo $(")).not.toBeNull();
  });
});

describe("the project's workflows", () => {
  it("are all well-formed", async () => {
    const files = (await readdir(WORKFLOWS)).filter((f) => /\.ya?ml$/.test(f));
    expect(files.sort()).toEqual(["deploy.yml", "test.yml"]);
    for (const f of files) {
      const problems = lintWorkflow(await load(join(WORKFLOWS, f)), { repoRoot: PROJECT_ROOT, file: f });
      expect(problems, f).toEqual([]);
    }
  });

  it("test.yml runs the CI entry point on pull requests, on pushes, and when called", async () => {
    const doc = await load(join(WORKFLOWS, "test.yml"));
    expect(Object.keys(triggers(doc))).toEqual(expect.arrayContaining(["pull_request", "push", "workflow_call"]));
    const runs = Object.values(jobs(doc)).flatMap((j) => steps(j).map((s) => s.run)).filter((r) => typeof r === "string");
    expect(runs).toContain("bash .ci/run");
    // .ci/run is the README's test command from a clean clone.
    const ci = await readFile(join(PROJECT_ROOT, ".ci", "run"), "utf8");
    expect(ci).toMatch(/^npm test$/m);
    expect(doc.permissions).toEqual({ contents: "read" });
  });

  it("deploy.yml deploys from main only after the tests pass, with the documented secrets", async () => {
    const doc = await load(join(WORKFLOWS, "deploy.yml"));
    expect(triggers(doc).push).toEqual({ branches: ["main"] });
    const all = jobs(doc);
    const testJob = Object.entries(all).find(([, j]) => j.uses === "./.github/workflows/test.yml");
    expect(testJob, "a job that calls test.yml").toBeDefined();
    const deploy = Object.values(all).find((j) => steps(j).some((s) => s.run === "npx wrangler deploy"));
    expect(deploy, "a job that runs npx wrangler deploy").toBeDefined();
    expect(deploy!.needs).toBe(testJob![0]);
    const step = steps(deploy!).find((s) => s.run === "npx wrangler deploy")!;
    expect(step.env).toMatchObject({
      CLOUDFLARE_API_TOKEN: "${{ secrets.CLOUDFLARE_API_TOKEN }}",
      CLOUDFLARE_ACCOUNT_ID: "${{ secrets.CLOUDFLARE_ACCOUNT_ID }}",
    });
    // Every secret a workflow reads is one the README tells users to create.
    const readme = section(await readFile(join(PROJECT_ROOT, "README.md"), "utf8"), "Deploying to Cloudflare");
    for (const name of secretsUsed(doc)) expect(readme, `secret ${name}`).toContain(`\`${name}\``);
  });
});

describe("the action (uploader/action.yml)", () => {
  it("is well-formed, runs on Node 24, and its entry points exist", async () => {
    const doc = await load(join(ACTION_DIR, "action.yml"));
    expect(lintAction(doc, { repoRoot: PROJECT_ROOT, file: "uploader/action.yml", actionDir: ACTION_DIR })).toEqual([]);
    expect(doc.runs).toMatchObject({ using: "node24", pre: "action/dist/pre.js", main: "action/dist/main.js", post: "action/dist/post.js" });
  });

  it("declares exactly the inputs its code reads, and only cache-url is required", async () => {
    const doc = await load(join(ACTION_DIR, "action.yml"));
    const declared = Object.keys(doc.inputs as YamlMap).sort();
    const read = new Set<string>();
    for (const f of await readdir(join(ACTION_DIR, "action"))) {
      if (!f.endsWith(".ts")) continue;
      const text = await readFile(join(ACTION_DIR, "action", f), "utf8");
      for (const m of text.matchAll(/\b(?:input|booleanInput)\("([a-z-]+)"/g)) read.add(m[1]!);
    }
    expect([...read].sort()).toEqual(declared);
    const required = Object.entries(doc.inputs as Record<string, YamlMap>).filter(([, s]) => s.required === "true").map(([n]) => n);
    expect(required).toEqual(["cache-url"]);
    expect((doc.inputs as Record<string, YamlMap>)["fail-on-error"]!.default).toBe("false");
  });

  it("is used correctly by the README's example workflow for a flake", async () => {
    const example = await readmeExample();
    expect(lintWorkflow(example, { repoRoot: PROJECT_ROOT, file: "README example" })).toEqual([]);
    const action = await load(join(ACTION_DIR, "action.yml"));
    const inputs = action.inputs as Record<string, YamlMap>;
    const allSteps = Object.values(jobs(example as YamlMap)).flatMap(steps);
    const uses = allSteps.map((s) => s.uses).filter((u): u is string => typeof u === "string");
    const ours = allSteps.filter((s) => typeof s.uses === "string" && /^[^/]+\/nix-edge-cache\/uploader@/.test(s.uses));
    expect(ours).toHaveLength(1);
    const withs = (ours[0]!.with ?? {}) as YamlMap;
    for (const k of Object.keys(withs)) expect(Object.keys(inputs), `input ${k}`).toContain(k);
    for (const [name, spec] of Object.entries(inputs)) if (spec.required === "true") expect(withs).toHaveProperty(name);
    // Nix is installed before the action's main step (its snapshot), and the build after it.
    const at = (pred: (s: YamlMap) => boolean): number => allSteps.findIndex(pred);
    const installNix = at((s) => typeof s.uses === "string" && /install-nix-action|nix-installer-action/.test(s.uses));
    const action_ = at((s) => s === ours[0]);
    const build = at((s) => typeof s.run === "string" && /\bnix build\b/.test(s.run));
    expect(installNix).toBeGreaterThanOrEqual(0);
    expect(installNix).toBeLessThan(action_);
    expect(action_).toBeLessThan(build);
    expect(uses.every((u) => u.includes("@"))).toBe(true);
  });
});
