/**
 * The per-uid audit budget (src/core/audit_budget.ts): another uid (65534, through setpriv)
 * sending GETs of missing 64 KiB names on one kept-alive connection grew the audit log by about
 * 26 MiB a second, without bound. With a budget of 64 KiB/s and a 256 KiB burst, the bytes of its
 * records in the audit output stay within burst + rate × the time the test measured (with slack),
 * every dropped record is counted in summary records (op "audit", result "dropped"), on stderr
 * and in the metrics, and root's records are all still written. Real broker, real second user;
 * assertions on what the audit output holds, never on time.
 */

import { assertEquals, ok } from "../support/assert.ts";
import { AUDIT_KEYS, type AuditLine, tempDir } from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";
import { brokerForOthers, NOBODY, pythonAsNobody, SKIP } from "../support/peer_agent.ts";
import { Client } from "../../src/client.ts";
import { BrokerError } from "../../src/errors.ts";
import { Cmd, encodeHeader, Flag, withExt } from "../../src/protocol/wire.ts";

const hexOf = (b: Uint8Array): string =>
  Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/**
 * Sends argv[3] copies of the request (header argv[2] in hex, then a name of argv[4] bytes of
 * "m") on one kept-alive connection, reading each reply; prints "done SENT NOT_FOUND".
 */
const FLOOD = `
import socket, struct, sys
path, header, n, name_len = sys.argv[1], bytes.fromhex(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
req = header + b"m" * name_len
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(60)
s.connect(path)
def read_exact(k):
    out = b""
    while len(out) < k:
        b = s.recv(k - len(out))
        if not b:
            break
        out += b
    return out
sent = missing = 0
for i in range(n):
    s.sendall(req)
    h = read_exact(48)
    if len(h) < 48:
        break
    sent += 1
    text = read_exact(struct.unpack_from("<I", h, 36)[0])
    if struct.unpack_from("<I", h, 8)[0] != 0 and text == b"object not found":
        missing += 1
print("done", sent, missing, flush=True)
`;

const NAME_LEN = 65536;
const RATE = 64 * 1024;
const BURST = 256 * 1024;
const FLOOD_GETS = 1500;
const ROOT_GETS = 40;

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** The byte length of an audit line as the broker wrote it (UTF-8, plus its newline). */
const lineBytes = (line: string): number => new TextEncoder().encode(line).length + 1;

Deno.test({
  name:
    "another uid flooding the audit log with GETs of missing 64 KiB names is held to its audit budget, summed up, and root is not",
  ignore: SKIP,
  fn: async () => {
    using dir = tempDir();
    const port = freePort();
    await using broker = await brokerForOthers(dir.path, [
      "--audit-peer",
      "--audit-uid-rate",
      "64KiB",
      "--audit-uid-burst",
      String(BURST),
      "--metrics",
      `127.0.0.1:${port}`,
    ]);
    const header = encodeHeader({
      cmd: Cmd.GET,
      nameLen: NAME_LEN,
      reserved: withExt(Flag.KEEP_ALIVE),
    });
    // The test's own measure of the flood's duration: from before the process starts to after
    // it has read its last reply, which contains every moment the broker charged its records.
    const started = performance.now();
    const flood = pythonAsNobody(
      ["-c", FLOOD, broker.socket, hexOf(header), String(FLOOD_GETS), String(NAME_LEN)],
      {
        stdin: "null",
        stdout: "piped",
        stderr: "inherit",
      },
    ).output();
    const out = await flood;
    const elapsedS = (performance.now() - started) / 1000;
    const said = new TextDecoder().decode(out.stdout).trim();
    assertEquals(said, `done ${FLOOD_GETS} ${FLOOD_GETS}`, "every GET was answered not found");

    // Root, exempt like the broker's own uid, is never held to a budget.
    {
      await using client = new Client({ socket: broker.socket });
      const name = "r".repeat(NAME_LEN);
      for (let i = 0; i < ROOT_GETS; i++) {
        try {
          (await client.get({ name })).close();
          throw new Error("a missing object was found");
        } catch (e) {
          if (!(e instanceof BrokerError)) throw e;
        }
      }
    }

    const nobodyGets = (): string[] =>
      broker.lines.filter((l) => l.includes('"op":"get"') && l.includes(`"peer_uid":${NOBODY},`));
    const summaries = (): AuditLine[] =>
      broker.audit().filter((r) => r.op === "audit" && r.peer_uid === NOBODY);
    // The budget: the burst, the rate over the measured time, one record into debt; slack 1.5x.
    const recordBytes = lineBytes(nobodyGets()[0] ?? "");
    ok(recordBytes > NAME_LEN, `a record holds the whole name (${recordBytes} bytes)`);
    const allowed = BURST + RATE * elapsedS + recordBytes;
    const writtenBytes = (): number => nobodyGets().reduce((n, l) => n + lineBytes(l), 0);
    // Every record of the flood is accounted for: written, or counted in a summary (the last
    // summary comes once the budget allows again, at a sweep). A log past the budget ends the
    // wait at once.
    await waitFor(() => {
      const dropped = summaries().reduce((n, r) => n + (r.count ?? 0), 0);
      return nobodyGets().length + dropped === FLOOD_GETS || writtenBytes() > allowed * 1.5;
    }, { what: "summary records counting every dropped record", timeoutMs: 30_000 });
    const written = nobodyGets();
    ok(
      writtenBytes() <= allowed * 1.5,
      `${writtenBytes()} bytes of uid ${NOBODY}'s records written in ${elapsedS.toFixed(2)} s; ` +
        `the budget allows ${Math.round(allowed)}`,
    );
    // The burst itself was written: the budget limits, it does not silence.
    ok(writtenBytes() >= BURST - recordBytes, `${writtenBytes()} bytes written, burst ${BURST}`);

    const sums = summaries();
    ok(sums.length >= 1);
    const droppedRecords = sums.reduce((n, r) => n + (r.count ?? 0), 0);
    const droppedBytes = sums.reduce((n, r) => n + (r.size ?? 0), 0);
    assertEquals(droppedRecords, FLOOD_GETS - written.length);
    // The size of a summary is the bytes of the records it counts (all of one length here,
    // give or take a digit of the time stamp).
    ok(
      Math.abs(droppedBytes - droppedRecords * recordBytes) <= droppedRecords * 2,
      `${droppedBytes} bytes for ${droppedRecords} records of ${recordBytes}`,
    );
    for (const s of sums) {
      // The twelve keys in order (then the peer's, with --audit-peer): log readers parse it.
      assertEquals(Object.keys(s).slice(0, 12), AUDIT_KEYS);
      assertEquals([s.operation, s.result, s.selector, s.name], ["audit", "dropped", null, null]);
      assertEquals(
        s.error,
        `uid ${NOBODY} exceeded its audit share (64 KiB/s): ${s.count} records dropped`,
      );
    }
    // Each summary is reported on stderr too (read by the test separately from stdout).
    await waitFor(
      () => sums.every((s) => broker.stderr.includes(`memfdbus broker: ${s.error}\n`)),
      {
        what: "a line on stderr for every summary record",
        timeoutMs: 30_000,
      },
    );

    // Root's records are all there, whole (a timeout here means some were not written).
    const rootGets = await waitFor(() => {
      const gets = broker.audit().filter((r) =>
        r.op === "get" && r.peer_uid === 0 && r.name === "r".repeat(NAME_LEN)
      );
      return gets.length >= ROOT_GETS ? gets : null;
    }, { what: `root's ${ROOT_GETS} records`, timeoutMs: 30_000 });
    assertEquals(rootGets.length, ROOT_GETS);
    assertEquals(broker.audit().filter((r) => r.op === "audit" && r.peer_uid === 0), []);

    // The metrics count the dropped records; the requests themselves are all counted.
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    ok(
      text.includes(`memfdbus_audit_records_over_share_total ${droppedRecords}\n`),
      text.split("\n").filter((l) => l.includes("audit")).join("\n"),
    );
    ok(
      text.includes(
        `memfdbus_requests_total{op="get",result="not_found"} ${FLOOD_GETS + ROOT_GETS}\n`,
      ),
      text.split("\n").filter((l) => l.includes("requests_total")).join("\n"),
    );
    assertEquals((await broker.stop()).code, 0, broker.stderr);
  },
});
