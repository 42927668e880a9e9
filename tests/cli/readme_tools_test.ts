/**
 * Issue 11, points 6 and 7: the README is true and the tools are honest. The README's library
 * section is run as written from a project outside this repository; its job-scoping paragraph
 * is checked against a real broker through the CLI; every task has a description; no script
 * ends processes by name; `check:docs` counts what it checks.
 */

import { assertEquals, ok } from "../support/assert.ts";
import { BrokerProcess, cli, enc, ROOT, tempDir } from "../support/harness.ts";
import { countChecked } from "../../scripts/check_doc_examples.ts";
import { parseConfig } from "../../src/core/config.ts";
import { defaultBrokerOptions } from "../../src/core/options.ts";

const README = Deno.readTextFileSync(`${ROOT}/README.md`);

/** The fenced blocks of `lang` in the README section starting at `heading`, in order. */
function blocks(heading: string, lang: string): string[] {
  const start = README.indexOf(`\n${heading}\n`);
  ok(start >= 0, `README has no ${heading}`);
  const end = README.indexOf("\n## ", start + heading.length + 2);
  const section = README.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(new RegExp("```" + lang + "\\n([\\s\\S]*?)```", "g"))]
    .map((m) => m[1] ?? "");
}

Deno.test({
  name: "the README's library section works from another project as written, ids print as numbers",
  sanitizeResources: false,
  fn: async () => {
    using dir = tempDir();
    await using broker = await BrokerProcess.start(dir.path);
    const [json] = blocks("## Library", "json");
    const [sh] = blocks("## Library", "sh");
    const [app] = blocks("## Library", "ts");
    ok(json !== undefined && sh !== undefined && app !== undefined);
    // The one path a user adapts: where their checkout is.
    const config = JSON.parse(json) as { imports: Record<string, string> };
    ok(config.imports["@memfdbus/memfdbus"]?.endsWith("/mod.ts"), json);
    config.imports["@memfdbus/memfdbus"] = `${ROOT}/mod.ts`;
    const project = `${dir.path}/app`;
    Deno.mkdirSync(project);
    Deno.writeTextFileSync(`${project}/deno.json`, JSON.stringify(config));
    Deno.writeTextFileSync(`${project}/app.ts`, app);
    ok(app.includes('from "@memfdbus/memfdbus"'), app);
    // The command line exactly as the README gives it.
    const argv = sh.trim().split(/\s+/);
    assertEquals(argv.slice(0, 2), ["deno", "run"]);
    const run = (args: string[]): Promise<Deno.CommandOutput> =>
      new Deno.Command(Deno.execPath(), {
        args,
        cwd: project,
        env: { MEMFDBUS_SOCKET: broker.socket, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
    const out = await run(argv.slice(1));
    const stdout = new TextDecoder().decode(out.stdout);
    assertEquals([out.code, new TextDecoder().decode(out.stderr)], [0, ""]);
    const lines = stdout.trimEnd().split("\n");
    ok(/^1 5 sha256:[0-9a-f]{64} hello$/.test(lines[0] ?? ""), stdout);
    ok(!/\b[0-9]+n\b/.test(stdout), `a bigint printed as such: ${stdout}`);
    // Without the permissions the README lists, the library cannot start.
    const bare = await run(["run", "app.ts"]);
    ok(bare.code !== 0);
    ok(new TextDecoder().decode(bare.stderr).includes("ffi"), "not an ffi permission error");
  },
});

Deno.test("job scoping works as the README says, and --require-job refuses unscoped callers", async () => {
  const text = README.replace(/\s+/g, " ");
  for (
    const claim of [
      "`put --job-id alpha --allow-job beta` makes an object owned by `alpha` that the jobs `alpha` and `beta` can read, other jobs (`--job-id gamma`) cannot see, and only `alpha` can drop.",
      "a caller without a job id (unscoped) can read, list and drop every object, scoped or not",
      "start the broker with `--require-job` (requests without a job id are refused)",
    ]
  ) ok(text.includes(claim), claim);
  using dir = tempDir();
  await using open = await BrokerProcess.start(dir.path);
  Deno.writeFileSync(`${dir.path}/f`, enc("scoped"));
  const s = ["--socket", open.socket];
  const put = await cli(["put", `${dir.path}/f`, "--job-id", "alpha", "--allow-job", "beta", ...s]);
  assertEquals([put.code, put.stdout], [0, "1\n"]);
  const [beta, gamma, gammaList, unscoped, unscopedList, betaDrop] = await Promise.all([
    cli(["get", "1", "-", "--job-id", "beta", ...s]),
    cli(["get", "1", "-", "--job-id", "gamma", ...s]),
    cli(["list", "--job-id", "gamma", ...s]),
    cli(["get", "1", "-", ...s]),
    cli(["list", ...s]),
    cli(["drop", "1", "--job-id", "beta", ...s]),
  ]);
  assertEquals([beta.code, beta.stdout], [0, "scoped"]);
  assertEquals([gamma.code, gamma.stderr], [1, "broker error: access denied\n"]);
  assertEquals([gammaList.code, gammaList.stdout], [0, ""]);
  assertEquals([unscoped.code, unscoped.stdout], [0, "scoped"]);
  ok(unscopedList.stdout.startsWith("1\towner=alpha\tallowed=beta\t"), unscopedList.stdout);
  assertEquals([betaDrop.code, betaDrop.stderr], [1, "broker error: access denied\n"]);
  const drop = await cli(["drop", "1", ...s]);
  assertEquals([drop.code, drop.stdout], [0, "1\n"]);

  await using strict = await BrokerProcess.start(dir.path, ["--require-job"]);
  const t = ["--socket", strict.socket];
  const [refused, scoped] = await Promise.all([
    cli(["list", ...t]),
    cli(["list", "--job-id", "alpha", ...t]),
  ]);
  assertEquals([refused.code, refused.stderr], [
    1,
    "broker error: job id required by broker policy — " +
    "pass --job-id JOB (or set MEMFDBUS_JOB_ID)\n",
  ]);
  assertEquals([scoped.code, scoped.stderr], [0, ""]);
});

Deno.test("every deno task has a description, and `deno task` shows it", async () => {
  const tasks = (JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.json`)) as {
    tasks: Record<string, string | { description?: string }>;
  }).tasks;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task"],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const listing = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  for (const [name, task] of Object.entries(tasks)) {
    const description = typeof task === "string" ? "" : task.description ?? "";
    ok(description.length > 10, `task ${name} has no description`);
    ok(listing.includes(`// ${description}`), `deno task does not show ${name}'s description`);
  }
});

Deno.test("the README points at no benchmark output file the repository lacks", async () => {
  const tracked = new TextDecoder().decode(
    (await new Deno.Command("git", { args: ["ls-files"], cwd: ROOT, stdout: "piped" }).output())
      .stdout,
  ).split("\n");
  const ignored = Deno.readTextFileSync(`${ROOT}/.gitignore`).split("\n");
  for (const m of README.matchAll(/bench\/results\/[\w.-]+/g)) {
    const path = m[0];
    const context = README.slice(Math.max(0, (m.index ?? 0) - 200), (m.index ?? 0) + 200);
    ok(
      tracked.includes(path) ||
        (ignored.includes("bench/results/") &&
          /git ignores|not committed|no results file/.test(context)),
      `README names ${path}, which is neither committed nor said to be yours`,
    );
  }
});

Deno.test("no file of the repository ends processes by name", async () => {
  // Built from parts, so this file does not match itself.
  const pattern = ["\\b(p", "kill|kill", "all)\\b"].join("");
  const out = await new Deno.Command("git", {
    args: ["grep", "-n", "-E", pattern, "--", "."],
    cwd: ROOT,
    stdout: "piped",
  }).output();
  assertEquals(new TextDecoder().decode(out.stdout), "");
});

Deno.test("check:docs counts the examples deno reports checking, coloured or not", () => {
  const lines = [
    "Check file:///r/src/client.ts$12-20.ts",
    "Check file:///r/mod.ts#3-9.ts",
    "Download https://example.com/x",
  ].join("\n");
  assertEquals(countChecked(lines), 2);
  assertEquals(countChecked(`\x1b[0m\x1b[32mCheck\x1b[0m file:///r/src/a.ts$1-4.ts\n`), 1);
  assertEquals(countChecked("Check file:///r/mod.ts\n"), 0);
});

Deno.test("every broker config in the README and contrib/memfdbus.jsonc is accepted as written", async () => {
  const examples = [
    ...blocks("## Configuration", "jsonc"),
    ...blocks("## Running it for months", "jsonc"),
    Deno.readTextFileSync(`${ROOT}/contrib/memfdbus.jsonc`),
  ];
  ok(examples.length >= 3, `${examples.length} config examples`);
  for (const text of examples) {
    const parsed = await parseConfig(text, "README.md", defaultBrokerOptions());
    ok(parsed.options.socket.length > 0, text);
  }
});
