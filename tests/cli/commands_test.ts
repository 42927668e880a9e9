/**
 * The memfdbus CLI's put, get, drop and list against a real broker subprocess: output bytes,
 * names, job-id policy, and what a failed get leaves behind (PROTOCOL.md §6, defects D13, D14,
 * D24).
 */

import { assertEquals, ok } from "../support/assert.ts";
import {
  type AuditLine,
  BrokerProcess,
  cli,
  type CliResult,
  enc,
  tempDir,
} from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";
import {
  assertFails,
  bytes,
  cliArgv,
  exists,
  listDir,
  probeTmpfs,
  sh,
  sha256,
  sharedTest,
  stopSharedTest,
  uniq,
} from "../support/cli.ts";

/** Assert a successful put and return the printed id. */
function putId(r: CliResult): bigint {
  assertEquals({ code: r.code, stderr: r.stderr }, { code: 0, stderr: "" });
  ok(/^[1-9][0-9]*\n$/.test(r.stdout), `put stdout: ${JSON.stringify(r.stdout)}`);
  return BigInt(r.stdout.trim());
}

/** Assert a successful run that printed exactly `stdout` (bytes) and nothing on stderr. */
function assertOut(r: CliResult, stdout: Uint8Array, what = ""): void {
  assertEquals({ what, code: r.code, stderr: r.stderr }, { what, code: 0, stderr: "" });
  ok(
    r.stdoutBytes.length === stdout.length && r.stdoutBytes.every((b, i) => b === stdout[i]),
    `${what}: stdout differs (${r.stdoutBytes.length} bytes, expected ${stdout.length})`,
  );
}

/** Assert two byte arrays are equal without dumping megabytes on failure. */
function assertBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  ok(
    actual.length === expected.length && actual.every((b, i) => b === expected[i]),
    `${what}: ${actual.length} bytes differ from the expected ${expected.length}`,
  );
}

/** One line of LIST text. */
async function listLine(
  id: number,
  owner: string | null,
  allowed: string | null,
  data: Uint8Array<ArrayBuffer>,
  name: string,
): Promise<string> {
  return `${id}\towner=${owner ?? "-"}\tallowed=${allowed ?? "-"}\t${data.length}\t${await sha256(
    data,
  )}\t${name}\n`;
}

// ---------------------------------------------------------------------------------------------
// put and get

sharedTest(
  "put prints the new id and get writes identical bytes to a new file, an existing file and stdout",
  async ({ broker, dir }) => {
    const s = ["--socket", broker.socket];
    const data = bytes(1536 * 1024 + 17, 7);
    Deno.writeFileSync(`${dir}/big.bin`, data);
    const id = putId(await cli(["put", `${dir}/big.bin`, ...s]));

    const fresh = `${dir}/fresh.out`;
    const g = await cli(["get", String(id), fresh, ...s]);
    assertEquals([g.code, g.stdout, g.stderr], [0, "", ""]);
    assertBytes(Deno.readFileSync(fresh), data, "new file");

    // An existing, longer file is replaced by exactly the object's bytes.
    const longer = `${dir}/longer.out`;
    Deno.writeFileSync(longer, bytes(3 * 1024 * 1024, 9));
    const g2 = await cli(["get", String(id), longer, ...s]);
    assertEquals([g2.code, g2.stdout, g2.stderr], [0, "", ""]);
    assertBytes(Deno.readFileSync(longer), data, "existing longer file");

    // A relative OUT is resolved against the working directory.
    Deno.mkdirSync(`${dir}/cwd`);
    const g3 = await cli(["get", String(id), "rel.out", ...s], { cwd: `${dir}/cwd` });
    assertEquals([g3.code, g3.stdout, g3.stderr], [0, "", ""]);
    assertBytes(Deno.readFileSync(`${dir}/cwd/rel.out`), data, "relative path");
    assertEquals(listDir(`${dir}/cwd`), ["rel.out"]);

    assertOut(await cli(["get", String(id), "-", ...s]), data, "get to stdout");
  },
);

sharedTest("an empty file is published and fetched as an empty object", async ({ broker, dir }) => {
  const s = ["--socket", broker.socket];
  const name = uniq("empty");
  Deno.writeFileSync(`${dir}/${name}`, new Uint8Array());
  const id = putId(await cli(["put", `${dir}/${name}`, ...s]));
  const out = `${dir}/${name}.out`;
  const g = await cli(["get", "--name", name, out, ...s]);
  assertEquals([g.code, g.stdout, g.stderr], [0, "", ""]);
  assertEquals(Deno.readFileSync(out).length, 0);
  assertOut(await cli(["get", String(id), "-", ...s]), new Uint8Array(), "empty to stdout");
});

sharedTest(
  "put names the object after the text following the last '/' of FILE by default",
  async ({ broker, dir }) => {
    const s = ["--socket", broker.socket];
    const base = `${uniq("base")}.txt`;
    Deno.mkdirSync(`${dir}/sub`, { recursive: true });
    const data = enc(`contents of ${base}`);
    Deno.writeFileSync(`${dir}/sub/${base}`, data);
    const id = putId(await cli(["put", `${dir}/sub/${base}`, ...s]));
    assertOut(await cli(["get", "--name", base, "-", ...s]), data, "by basename");
    assertFails(
      await cli(["get", "--name", `sub/${base}`, "-", ...s]),
      "broker error: object not found\n",
    );
    // A FILE without '/' is its own name; --name overrides the default.
    const other = uniq("plain");
    Deno.writeFileSync(`${dir}/sub/${other}`, enc("plain"));
    const id2 = putId(
      await cli(["put", other, "--name", `${other}-named`, ...s], {
        cwd: `${dir}/sub`,
      }),
    );
    const id3 = putId(await cli(["put", other, ...s], { cwd: `${dir}/sub` }));
    ok(id < id2 && id2 < id3, `${id} < ${id2} < ${id3}`);
    assertOut(await cli(["get", "--name", `${other}-named`, "-", ...s]), enc("plain"), "named");
    assertOut(await cli(["get", "--name", other, "-", ...s]), enc("plain"), "no slash");
    assertEquals((await cli(["drop", "--name", other, ...s])).stdout, `${id3}\n`);
  },
);

sharedTest(
  "put - reads stdin from a pipe or a redirected file and names the object 'stdin'",
  async ({ broker, dir }) => {
    const s = ["--socket", broker.socket];
    const piped = bytes(300_000, 3);
    const id1 = putId(await cli(["put", "-", ...s], { stdin: piped }));
    assertOut(await cli(["get", "--name", "stdin", "-", ...s]), piped, "latest 'stdin'");
    assertOut(await cli(["get", String(id1), "-", ...s]), piped, "piped by id");

    const fromFile = bytes(70_000, 4);
    Deno.writeFileSync(`${dir}/stdin-src`, fromFile);
    const r = await sh('f=$1; shift; exec "$@" < "$f"', [
      `${dir}/stdin-src`,
      ...cliArgv(["put", "-", ...s]),
    ]);
    const id2 = putId(r);
    ok(id2 > id1);
    assertOut(await cli(["get", "--name", "stdin", "-", ...s]), fromFile, "redirected file");

    const name = uniq("named-stdin");
    const id3 = putId(await cli(["put", "-", "--name", name, ...s], { stdin: enc("xyz") }));
    assertOut(await cli(["get", "--name", name, "-", ...s]), enc("xyz"), "--name with -");
    assertEquals((await cli(["drop", "--name", name, ...s])).stdout, `${id3}\n`);
  },
);

sharedTest(
  "put --content-addressed publishes under sha256:<hex> and republishing gives a new id under that name",
  async ({ broker, dir }) => {
    const s = ["--socket", broker.socket];
    const data = enc(`content ${crypto.randomUUID()}`);
    Deno.writeFileSync(`${dir}/ca.txt`, data);
    const digest = await sha256(data);
    const id1 = putId(await cli(["put", `${dir}/ca.txt`, "--content-addressed", ...s]));
    const id2 = putId(await cli(["put", `${dir}/ca.txt`, "--content-addressed", ...s]));
    ok(id2 > id1, `${id2} > ${id1}`);
    assertOut(await cli(["get", "--name", digest, "-", ...s]), data, "by digest name");
    assertFails(
      await cli(["get", "--name", "ca.txt", "-", ...s]),
      "broker error: object not found\n",
    );
    // The newest version goes first, then the older one, then nothing is left.
    assertEquals((await cli(["drop", "--name", digest, ...s])).stdout, `${id2}\n`);
    assertEquals((await cli(["drop", "--name", digest, ...s])).stdout, `${id1}\n`);
    assertFails(await cli(["drop", "--name", digest, ...s]), "broker error: object not found\n");
  },
);

sharedTest(
  "names longer than 249 bytes can be published and fetched by name (D13 fixed)",
  async ({ broker, dir }) => {
    const s = ["--socket", broker.socket];
    const tag = crypto.randomUUID();
    for (const len of [250, 300, 65536]) {
      const name = (tag + "n".repeat(len)).slice(0, len);
      const data = enc(`payload of a ${len}-byte name`);
      Deno.writeFileSync(`${dir}/long-${len}`, data);
      const id = putId(await cli(["put", `${dir}/long-${len}`, "--name", name, ...s]));
      assertOut(await cli(["get", "--name", name, "-", ...s]), data, `${len}-byte name`);
      const d = await cli(["drop", "--name", name, ...s]);
      assertEquals([d.code, d.stdout, d.stderr], [0, `${id}\n`, ""]);
    }
  },
);

sharedTest(
  "get - appends to a stdout opened with O_APPEND (D14 fixed)",
  async ({ broker, dir }) => {
    const s = ["--socket", broker.socket];
    const data = bytes(1024 * 1024 + 5, 11);
    Deno.writeFileSync(`${dir}/append-src`, data);
    const id = putId(await cli(["put", `${dir}/append-src`, ...s]));
    const target = `${dir}/append.out`;
    Deno.writeFileSync(target, enc("prefix:"));
    const script = 'o=$1; shift; exec "$@" >> "$o"';
    const r = await sh(script, [target, ...cliArgv(["get", String(id), "-", ...s])]);
    assertEquals([r.code, r.stdout, r.stderr], [0, "", ""]);
    const r2 = await sh(script, [target, ...cliArgv(["get", String(id), "-", ...s])]);
    assertEquals([r2.code, r2.stdout, r2.stderr], [0, "", ""]);
    const expected = new Uint8Array(7 + 2 * data.length);
    expected.set(enc("prefix:"));
    expected.set(data, 7);
    expected.set(data, 7 + data.length);
    assertBytes(Deno.readFileSync(target), expected, "appended file");
  },
);

// ---------------------------------------------------------------------------------------------
// drop and errors

sharedTest(
  "drop prints the dropped id, and drop --name removes the newest version so the previous one is latest",
  async ({ broker, dir }) => {
    const s = ["--socket", broker.socket];
    const name = uniq("versions");
    Deno.writeFileSync(`${dir}/v1`, enc("version one"));
    Deno.writeFileSync(`${dir}/v2`, enc("version two"));
    const id1 = putId(await cli(["put", `${dir}/v1`, "--name", name, ...s]));
    const id2 = putId(await cli(["put", `${dir}/v2`, "--name", name, ...s]));
    assertOut(await cli(["get", "--name", name, "-", ...s]), enc("version two"), "latest");
    assertOut(await cli(["drop", "--name", name, ...s]), enc(`${id2}\n`), "drop newest");
    assertOut(await cli(["get", "--name", name, "-", ...s]), enc("version one"), "previous");
    assertFails(await cli(["get", String(id2), "-", ...s]), "broker error: object not found\n");
    assertOut(await cli(["drop", String(id1), ...s]), enc(`${id1}\n`), "drop by id");
    assertFails(await cli(["drop", String(id1), ...s]), "broker error: object not found\n");
    assertFails(await cli(["get", "--name", name, "-", ...s]), "broker error: object not found\n");
  },
);

sharedTest(
  "missing objects give 'broker error: object not found' and hidden ones 'broker error: access denied', exit 1",
  async ({ broker, dir }) => {
    const s = ["--socket", broker.socket];
    const name = uniq("owned");
    Deno.writeFileSync(`${dir}/owned`, enc("owned"));
    const id = putId(await cli(["put", `${dir}/owned`, "--name", name, "--job-id", "own", ...s]));
    const missing = uniq("missing");
    const rs = await Promise.all([
      cli(["get", "999999999", "-", ...s]),
      cli(["get", "--name", missing, "-", ...s]),
      cli(["drop", "999999999", ...s]),
      cli(["drop", "--name", missing, ...s]),
      cli(["exec", "--name", missing, ...s, "--", "true"]),
    ]);
    for (const r of rs) assertFails(r, "broker error: object not found\n");
    const ds = await Promise.all([
      cli(["get", String(id), "-", "--job-id", "other", ...s]),
      cli(["get", "--name", name, "-", "--job-id", "other", ...s]),
      cli(["drop", String(id), "--job-id", "other", ...s]),
      cli(["exec", String(id), "--job-id", "other", ...s, "--", "true"]),
    ]);
    for (const r of ds) assertFails(r, "broker error: access denied\n");
    assertOut(await cli(["drop", String(id), "--job-id", "own", ...s]), enc(`${id}\n`), "owner");
  },
);

sharedTest(
  "a get that fails at the broker creates no OUT and leaves an existing OUT unchanged (D24)",
  async ({ broker, dir }) => {
    const s = ["--socket", broker.socket];
    Deno.mkdirSync(`${dir}/d24`);
    const out = `${dir}/d24/out.bin`;
    assertFails(await cli(["get", "999999998", out, ...s]), "broker error: object not found\n");
    assertFails(
      await cli(["get", "--name", uniq("nope"), out, ...s]),
      "broker error: object not found\n",
    );
    assertEquals(listDir(`${dir}/d24`), []);

    Deno.writeFileSync(out, enc("precious"));
    const before = Deno.statSync(out);
    assertFails(await cli(["get", "999999998", out, ...s]), "broker error: object not found\n");
    Deno.writeFileSync(`${dir}/d24-src`, enc("hidden"));
    const id = putId(await cli(["put", `${dir}/d24-src`, "--job-id", "d24owner", ...s]));
    assertFails(
      await cli(["get", String(id), out, "--job-id", "intruder", ...s]),
      "broker error: access denied\n",
    );
    assertEquals(Deno.readTextFileSync(out), "precious");
    assertEquals(Deno.statSync(out).mtime, before.mtime);
    assertEquals(listDir(`${dir}/d24`), ["out.bin"]);
  },
);

sharedTest(
  "get into /dev/full fails with 'write output: /dev/full: No space left on device'",
  async ({ broker, dir }) => {
    const s = ["--socket", broker.socket];
    Deno.writeFileSync(`${dir}/full-src`, bytes(200_000, 5));
    const id = putId(await cli(["put", `${dir}/full-src`, ...s]));
    assertFails(
      await cli(["get", String(id), "/dev/full", ...s]),
      "write output: /dev/full: No space left on device\n",
    );
    const r = await sh('exec "$@" > /dev/full', cliArgv(["get", String(id), "-", ...s]));
    assertFails(r, "write output: No space left on device\n", "stdout is /dev/full");
  },
);

sharedTest(
  "get into a directory or below a missing directory fails with 'open output: PATH: ...'",
  async ({ broker, dir }) => {
    const s = ["--socket", broker.socket];
    Deno.writeFileSync(`${dir}/open-src`, enc("x"));
    const id = putId(await cli(["put", `${dir}/open-src`, ...s]));
    assertFails(await cli(["get", String(id), dir, ...s]), `open output: ${dir}: Is a directory\n`);
    assertFails(
      await cli(["get", String(id), `${dir}/no-such-dir/out`, ...s]),
      `open output: ${dir}/no-such-dir/out: No such file or directory\n`,
    );
    assertEquals(exists(`${dir}/no-such-dir`), false);
  },
);

const tmpfsProblem = probeTmpfs();

Deno.test({
  name: "an I/O error while copying leaves neither OUT nor a temporary file behind (D24 fixed)" +
    (tmpfsProblem === null ? "" : ` [ignored: ${tmpfsProblem}]`),
  ignore: tmpfsProblem !== null,
  fn: async () => {
    using dir = tempDir();
    await using broker = await BrokerProcess.start(dir.path);
    const s = ["--socket", broker.socket];
    const data = bytes(1024 * 1024, 13);
    Deno.writeFileSync(`${dir.path}/big`, data);
    const id = putId(await cli(["put", `${dir.path}/big`, ...s]));
    const mnt = `${dir.path}/mnt`;
    Deno.mkdirSync(mnt);
    const m = new Deno.Command("mount", { args: ["-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt] })
      .outputSync();
    assertEquals(m.code, 0);
    try {
      assertFails(
        await cli(["get", String(id), `${mnt}/out.bin`, ...s]),
        `write output: ${mnt}/out.bin: No space left on device\n`,
        "new OUT",
      );
      assertEquals(listDir(mnt), []);

      // An OUT that existed before keeps its old contents.
      Deno.writeFileSync(`${mnt}/old.bin`, enc("old contents"));
      assertFails(
        await cli(["get", String(id), `${mnt}/old.bin`, ...s]),
        `write output: ${mnt}/old.bin: No space left on device\n`,
        "existing OUT",
      );
      assertEquals(listDir(mnt), ["old.bin"]);
      assertEquals(Deno.readTextFileSync(`${mnt}/old.bin`), "old contents");

      // The same object fits once there is room: the failure was the copy, not the fetch.
      const ok2 = await cli(["get", String(id), `${dir.path}/fits.bin`, ...s]);
      assertEquals([ok2.code, ok2.stderr], [0, ""]);
      assertBytes(Deno.readFileSync(`${dir.path}/fits.bin`), data, "outside the tmpfs");
    } finally {
      new Deno.Command("umount", { args: [mnt] }).outputSync();
    }
  },
});

// ---------------------------------------------------------------------------------------------
// list and job ids (each with its own broker, since LIST shows the whole store)

Deno.test("list prints the broker's listing exactly, and nothing for an empty store", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const s = ["--socket", broker.socket];
  const empty = await cli(["list", ...s]);
  assertEquals([empty.code, empty.stdoutBytes.length, empty.stderr], [0, 0, ""]);

  const a = enc("alpha");
  const b = bytes(4097, 2);
  const c = enc("gamma\n");
  Deno.writeFileSync(`${dir.path}/a.txt`, a);
  Deno.writeFileSync(`${dir.path}/c.txt`, c);
  assertEquals(putId(await cli(["put", `${dir.path}/a.txt`, ...s])), 1n);
  assertEquals(putId(await cli(["put", "-", ...s], { stdin: b })), 2n);
  assertEquals(
    putId(
      await cli(["put", `${dir.path}/c.txt`, "--name", "ñame with space", "--job-id", "o", ...s]),
    ),
    3n,
  );
  assertEquals(
    putId(
      await cli([
        "put",
        `${dir.path}/a.txt`,
        "--content-addressed",
        "--job-id",
        "o",
        "--allow-job",
        "p",
        ...s,
      ]),
    ),
    4n,
  );
  const expected = [
    await listLine(1, null, null, a, "a.txt"),
    await listLine(2, null, null, b, "stdin"),
    await listLine(3, "o", null, c, "ñame with space"),
    await listLine(4, "o", "p", a, await sha256(a)),
  ].join("");
  const l = await cli(["list", ...s]);
  assertEquals([l.code, l.stdout, l.stderr], [0, expected, ""]);
  // The listing goes to stdout unchanged when stdout is a file, too.
  const r = await sh('o=$1; shift; exec "$@" > "$o"', [
    `${dir.path}/list.txt`,
    ...cliArgv(["list", ...s]),
  ]);
  assertEquals([r.code, r.stderr], [0, ""]);
  assertEquals(Deno.readTextFileSync(`${dir.path}/list.txt`), expected);

  assertEquals((await cli(["drop", "2", ...s])).stdout, "2\n");
  const l2 = await cli(["list", ...s]);
  assertEquals(l2.stdout, expected.split("\n").filter((_, i) => i !== 1).join("\n"));
  for (const id of ["1", "3", "4"]) assertEquals((await cli(["drop", id, ...s])).code, 0);
  const l3 = await cli(["list", ...s]);
  assertEquals([l3.code, l3.stdout, l3.stderr], [0, "", ""]);
});

Deno.test(
  "owner and allowed jobs set through the CLI decide who can list, get and drop",
  async () => {
    using dir = tempDir();
    await using broker = await BrokerProcess.start(dir.path);
    const s = ["--socket", broker.socket];
    const secret = enc("secret");
    const pub = enc("public");
    const cdata = enc("c's own");
    const envd = enc("from env");
    Deno.writeFileSync(`${dir.path}/secret`, secret);
    Deno.writeFileSync(`${dir.path}/pub`, pub);
    Deno.writeFileSync(`${dir.path}/cdata`, cdata);
    Deno.writeFileSync(`${dir.path}/envd`, envd);
    const put = async (args: string[], env: Record<string, string> = {}): Promise<bigint> =>
      putId(await cli(["put", ...args, ...s], { env }));
    assertEquals(await put([`${dir.path}/secret`, "--job-id", "a", "--allow-job", "b"]), 1n);
    assertEquals(await put([`${dir.path}/pub`]), 2n);
    assertEquals(await put([`${dir.path}/cdata`, "--job-id", "c"]), 3n);
    // The owner comes from MEMFDBUS_JOB_ID when --job-id is absent.
    assertEquals(await put([`${dir.path}/envd`, "--allow-job", "b"], { MEMFDBUS_JOB_ID: "a" }), 4n);
    // --job-id overrides MEMFDBUS_JOB_ID for the owner.
    assertEquals(
      await put([`${dir.path}/pub`, "--job-id", "c", "--name", "pub-c"], {
        MEMFDBUS_JOB_ID: "a",
      }),
      5n,
    );

    const l1 = await listLine(1, "a", "b", secret, "secret");
    const l2 = await listLine(2, null, null, pub, "pub");
    const l3 = await listLine(3, "c", null, cdata, "cdata");
    const l4 = await listLine(4, "a", "b", envd, "envd");
    const l5 = await listLine(5, "c", null, pub, "pub-c");
    const list = async (args: string[], env: Record<string, string> = {}): Promise<string> => {
      const r = await cli(["list", ...args, ...s], { env });
      assertEquals([r.code, r.stderr], [0, ""]);
      return r.stdout;
    };
    assertEquals(await list([]), l1 + l2 + l3 + l4 + l5);
    assertEquals(await list(["--job-id", "a"]), l1 + l2 + l4);
    assertEquals(await list(["--job-id", "b"]), l1 + l2 + l4);
    assertEquals(await list(["--job-id", "c"]), l2 + l3 + l5);
    assertEquals(await list(["--job-id", "z"]), l2);
    assertEquals(await list([], { MEMFDBUS_JOB_ID: "c" }), l2 + l3 + l5);
    assertEquals(await list(["--job-id", "b"], { MEMFDBUS_JOB_ID: "c" }), l1 + l2 + l4);
    assertEquals(await list([], { MEMFDBUS_JOB_ID: "" }), l1 + l2 + l3 + l4 + l5);

    // get: the owner and the allowed job may read, another job may not.
    assertOut(await cli(["get", "1", "-", "--job-id", "a", ...s]), secret, "owner get");
    assertOut(await cli(["get", "1", "-", "--job-id", "b", ...s]), secret, "allowed get");
    assertOut(await cli(["get", "--name", "secret", "-", "--job-id", "b", ...s]), secret, "name");
    assertOut(
      await cli(["get", "1", "-", "--job-id", "b", ...s], { env: { MEMFDBUS_JOB_ID: "c" } }),
      secret,
      "--job-id over the environment",
    );
    assertOut(await cli(["get", "1", "-", ...s], { env: { MEMFDBUS_JOB_ID: "b" } }), secret, "env");
    assertOut(
      await cli(["get", "1", "-", ...s], { env: { MEMFDBUS_JOB_ID: "" } }),
      secret,
      "empty",
    );
    const denied = await Promise.all([
      cli(["get", "1", "-", "--job-id", "c", ...s]),
      cli(["get", "--name", "secret", "-", "--job-id", "c", ...s]),
      cli(["get", "1", "-", ...s], { env: { MEMFDBUS_JOB_ID: "c" } }),
      cli(["get", "1", "-", "--job-id", "c", ...s], { env: { MEMFDBUS_JOB_ID: "b" } }),
      cli(["get", "3", "-", "--job-id", "a", ...s]),
      // drop: the allowed job cannot drop, nor can a stranger.
      cli(["drop", "1", "--job-id", "b", ...s]),
      cli(["drop", "1", "--job-id", "c", ...s]),
      cli(["drop", "--name", "secret", "--job-id", "b", ...s]),
      cli(["drop", "1", ...s], { env: { MEMFDBUS_JOB_ID: "b" } }),
    ]);
    denied.forEach((r, i) => assertFails(r, "broker error: access denied\n", `case ${i}`));
    assertEquals(await list([]), l1 + l2 + l3 + l4 + l5);

    assertOut(await cli(["drop", "1", "--job-id", "a", ...s]), enc("1\n"), "owner drop");
    assertOut(await cli(["drop", "4", ...s], { env: { MEMFDBUS_JOB_ID: "a" } }), enc("4\n"), "env");
    assertEquals(await list(["--job-id", "b"]), l2);
    assertEquals(await list([]), l2 + l3 + l5);

    // The audit log shows the job each request ran as.
    const okDrops = (): AuditLine[] =>
      broker.audit().filter((r) => r.op === "drop" && r.result === "ok");
    const drops = await waitFor(() => okDrops().length >= 2 ? okDrops() : null, {
      what: "2 ok drop records",
    });
    const audit = broker.audit();
    assertEquals(drops.map((r) => [r.object_id, r.job_id]), [[1, "a"], [4, "a"]]);
    const puts = audit.filter((r) => r.op === "put");
    assertEquals(puts.map((r) => r.job_id), ["a", null, "c", "a", "c"]);
  },
);

stopSharedTest();
