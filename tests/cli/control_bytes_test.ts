/**
 * Issue 10, point 5: a C broker accepts names with any bytes, so the CLI must print what such a
 * broker lists without letting a name drive the terminal or break `list --json`. A stand-in C
 * broker (a few lines of python answering every request with one fixed LIST reply) lists a name
 * holding ESC sequences, a carriage return and a newline.
 */

import { assertEquals, ok } from "../support/assert.ts";
import { CLI, cli, CLI_PERMS, dec, tempDir } from "../support/harness.ts";
import { standIn } from "../support/stand_in.ts";
import { Cmd, encodeHeader, HEADER_SIZE } from "../../src/protocol/wire.ts";
import { statText } from "../../src/cli/stat.ts";

const DIGEST = "sha256:" + "0".repeat(64);
const HOSTILE = "a\x1b]0;owned\x07b\x1b[31mc\rd\ne";
const LISTING = `1\towner=-\tallowed=-\t1\t${DIGEST}\t${HOSTILE}\n` +
  `2\towner=-\tallowed=-\t1\t${DIGEST}\tplain\n`;

function listReply(text: string): Uint8Array {
  const body = new TextEncoder().encode(text);
  const out = new Uint8Array(HEADER_SIZE + body.length);
  encodeHeader({ cmd: Cmd.LIST, textLen: body.length }, out);
  out.set(body, HEADER_SIZE);
  return out;
}

Deno.test("list --json from a C broker whose name holds a newline and ESC bytes is valid JSON", async () => {
  using dir = tempDir();
  const socket = `${dir.path}/c.sock`;
  await using _broker = await standIn(socket, { reply: listReply(LISTING) });
  const r = await cli(["list", "--json", "--socket", socket]);
  assertEquals([r.code, r.stderr], [0, ""]);
  const parsed = JSON.parse(r.stdout) as { id: number; name: string }[];
  assertEquals(parsed.map((e) => [e.id, e.name]), [[1, HOSTILE], [2, "plain"]]);
  ok(!r.stdout.includes("\x1b"), "no raw ESC in the JSON");
});

Deno.test({
  name: "list on a terminal shows a C broker's control bytes escaped; piped, the bytes are as sent",
  ignore: !Deno.statSync("/usr/bin/script").isFile,
  fn: async () => {
    using dir = tempDir();
    const socket = `${dir.path}/c.sock`;
    await using _broker = await standIn(socket, { reply: listReply(LISTING) });
    // script(1) gives the CLI a terminal for its stdout and copies what it shows.
    const command = [Deno.execPath(), "run", ...CLI_PERMS, CLI, "list", "--socket", socket]
      .map((a) => `'${a}'`).join(" ");
    const shown = await new Deno.Command("/usr/bin/script", {
      args: ["-qec", command, "/dev/null"],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
    }).output();
    const text = dec(shown.stdout);
    assertEquals(shown.code, 0, text + dec(shown.stderr));
    ok(text.includes("a\\x1b]0;owned\\x07b\\x1b[31mc\\x0dd"), text);
    ok(!text.includes("\x1b") && !text.includes("\x07"), JSON.stringify(text));
    const piped = await cli(["list", "--socket", socket]);
    assertEquals([piped.code, piped.stdout], [0, LISTING]);
  },
});

Deno.test("stat's text shows control bytes of a name and job ids escaped", () => {
  const text = statText({
    id: 1n,
    name: "x\x1b[2Jy",
    size: 1,
    digest: DIGEST,
    seals: 15,
    owner: "o\rp",
    allowed: null,
    createdNs: null,
  });
  ok(text.includes("name:    x\\x1b[2Jy\n"), text);
  ok(text.includes("owner:   o\\x0dp\n"), text);
  ok(!text.includes("\x1b") && !text.includes("\r"), JSON.stringify(text));
});
