/**
 * Issue 10, point 5: names and job ids are valid UTF-8 without control bytes, refused otherwise
 * with a clear text; the audit log stays valid JSON (and valid UTF-8) whatever bytes a request
 * holds. Against a real broker process.
 */

import { assertEquals, ok } from "../support/assert.ts";
import {
  BrokerProcess,
  digestOf,
  request,
  roundTrip,
  sealedMemfd,
  tempDir,
} from "../support/harness.ts";
import { Cmd } from "../../src/protocol/wire.ts";
import { Status } from "../../src/errors.ts";
import { fromBinary, toBinary } from "../../src/protocol/bytes.ts";

const bytes = (s: string): Uint8Array => fromBinary(s);
const text = (b: Uint8Array): string => new TextDecoder().decode(b);

async function put(socket: string, name: string, job = ""): Promise<[number, string]> {
  const data = bytes("payload");
  using m = sealedMemfd(data);
  const r = await roundTrip(
    socket,
    request(
      {
        cmd: Cmd.PUT,
        size: BigInt(data.length),
        nameLen: name.length,
        textLen: 71,
        jobLen: job.length,
      },
      bytes(name),
      digestOf(data),
      bytes(job),
    ),
    [m.fd],
  );
  return [r.header.status, text(r.body)];
}

Deno.test("PUT refuses names and job ids with control bytes or invalid UTF-8, naming the byte", async () => {
  using dir = tempDir();
  await using b = await BrokerProcess.start(dir.path);
  const cases: [string, string, string][] = [
    ["a\nb", "", "object name must not contain control byte 0x0a (at byte 1)"],
    ["\tname", "", "object name must not contain control byte 0x09 (at byte 0)"],
    ["x\x7f", "", "object name must not contain control byte 0x7f (at byte 1)"],
    ["x\x1b[2J", "", "object name must not contain control byte 0x1b (at byte 1)"],
    ["bad\xff", "", "object name must be valid UTF-8 (invalid byte 0xff at byte 3)"],
    // U+009B (CSI) in UTF-8: a terminal may run it as an escape sequence.
    ["ok\xc2\x9b2J", "", "object name must not contain control character U+009b (at byte 2)"],
    ["ok", "j\xc2\x85", "job id must not contain control character U+0085 (at byte 1)"],
    ["ok", "job\rx", "job id must not contain control byte 0x0d (at byte 3)"],
  ];
  for (const [name, job, want] of cases) {
    assertEquals(await put(b.socket, name, job), [Status.BAD_REQUEST, want], JSON.stringify(name));
  }
  // Printable UTF-8 is fine.
  assertEquals(
    (await put(b.socket, toBinary(new TextEncoder().encode("sensor/température")), "job-1"))[0],
    0,
  );
  // Every request's job id follows the rule.
  const list = await roundTrip(b.socket, request({ cmd: Cmd.LIST, jobLen: 3 }, bytes("a\tb")));
  assertEquals([list.header.status, text(list.body)], [
    Status.BAD_REQUEST,
    "job id must not contain control byte 0x09 (at byte 1)",
  ]);
  // The audit log is one valid UTF-8 JSON object per line, even for a GET of raw bytes.
  const get = await roundTrip(
    b.socket,
    request({ cmd: Cmd.GET, nameLen: 5 }, bytes('\xff\n\x00"z')),
  );
  assertEquals(get.header.status, Status.NOT_FOUND);
  const c1 = await roundTrip(b.socket, request({ cmd: Cmd.GET, nameLen: 4 }, bytes("\xc2\x9b2J")));
  assertEquals(c1.header.status, Status.NOT_FOUND);
  await b.waitAudit(cases.length + 4);
  const decoder = new TextDecoder("utf-8", { fatal: true });
  for (const line of b.lines.slice(1)) {
    ok(!line.includes("\n"));
    JSON.parse(line);
  }
  const [last, c1Line] = [b.audit().at(-2), b.lines.at(-1) ?? ""];
  assertEquals(last?.name, "\ufffd\n", "invalid bytes become U+FFFD, the value ends at NUL");
  ok(c1Line.includes('"name":"\\u009b2J"'), `a C1 control is escaped in the log: ${c1Line}`);
  decoder.decode(new TextEncoder().encode(b.lines.join("\n")));
});
