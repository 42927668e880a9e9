import { assertEquals, ok } from "../support/assert.ts";
import { type AuditRecord, blankRecord, formatRecord, jsonString } from "../../src/core/audit.ts";
import { AuditLog } from "../../src/broker/audit_sink.ts";
import { realtimeNs } from "../../src/sys/clock.ts";
import { toBinary } from "../../src/protocol/bytes.ts";
import { libc } from "../../src/ffi.ts";
import { setNonblocking, tryOpen } from "../../src/sys/fd.ts";
import { O_WRONLY } from "../../src/sys/linux.ts";
import { AUDIT_KEYS, dec, enc } from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";
import { fdGuard, hex, ownTempDir, pipe, tryReadFd } from "../support/fds.ts";

const DIGEST = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

function rec(fields: Partial<AuditRecord>): AuditRecord {
  return { ...blankRecord("put", "ok", null), ...fields };
}

Deno.test("blankRecord fills every field with null except op, result and error", () => {
  assertEquals(blankRecord("get", "not_found", "object not found"), {
    op: "get",
    result: "not_found",
    selector: null,
    objectId: null,
    name: null,
    size: null,
    count: null,
    digest: null,
    jobId: null,
    error: "object not found",
  });
});

Deno.test("formatRecord writes the twelve keys in the C order for a put ok record", () => {
  const line = formatRecord(
    1700000000123456789n,
    rec({ objectId: 1, name: "a", size: 5, digest: DIGEST, jobId: "job" }),
  );
  assertEquals(
    line,
    '{"ts_ns":1700000000123456789,"op":"put","operation":"put","result":"ok","selector":null,' +
      `"object_id":1,"name":"a","size":5,"count":null,"digest":"${DIGEST}","job_id":"job",` +
      '"error":null}\n',
  );
  const parsed = JSON.parse(line) as Record<string, unknown>;
  assertEquals(Object.keys(parsed), AUDIT_KEYS);
});

Deno.test("formatRecord writes an error record with selector and error text", () => {
  const r = blankRecord("get", "bad_request", null);
  r.selector = "id";
  r.objectId = 7n;
  r.error = "job id too long";
  assertEquals(
    formatRecord(5n, r),
    '{"ts_ns":5,"op":"get","operation":"get","result":"bad_request","selector":"id",' +
      '"object_id":7,"name":null,"size":null,"count":null,"digest":null,"job_id":null,' +
      '"error":"job id too long"}\n',
  );
});

Deno.test("formatRecord writes a list record whose size equals its count, including 0", () => {
  const r = blankRecord("list", "ok", null);
  r.size = 0;
  r.count = 0;
  assertEquals(
    formatRecord(0n, r),
    '{"ts_ns":0,"op":"list","operation":"list","result":"ok","selector":null,' +
      '"object_id":null,"name":null,"size":0,"count":0,"digest":null,"job_id":null,' +
      '"error":null}\n',
  );
});

Deno.test("formatRecord prints object_id 0 as null, for numbers and bigints", () => {
  for (const id of [0, 0n, null]) {
    const line = formatRecord(1n, rec({ objectId: id }));
    ok(line.includes(',"object_id":null,'), line);
  }
  ok(formatRecord(1n, rec({ objectId: 3 })).includes(',"object_id":3,'));
});

Deno.test("formatRecord prints u64 ids and sizes exactly, beyond 2^53", () => {
  const line = formatRecord(
    1n,
    rec({ objectId: 18446744073709551615n, size: 9007199254740993n }),
  );
  ok(line.includes('"object_id":18446744073709551615,'), line);
  ok(line.includes('"size":9007199254740993,'), line);
});

Deno.test("formatRecord prints the unknown-command record with the cmd number as object_id", () => {
  const r = blankRecord("unknown", "bad_request", "unknown command");
  r.objectId = 9;
  assertEquals(
    formatRecord(2n, r),
    '{"ts_ns":2,"op":"unknown","operation":"unknown","result":"bad_request","selector":null,' +
      '"object_id":9,"name":null,"size":null,"count":null,"digest":null,"job_id":null,' +
      '"error":"unknown command"}\n',
  );
});

Deno.test("formatRecord appends peer_pid, peer_uid and peer_gid after the twelve keys", () => {
  const line = formatRecord(3n, blankRecord("list", "ok", null), { pid: 10, uid: 20, gid: 30 });
  ok(line.endsWith(',"error":null,"peer_pid":10,"peer_uid":20,"peer_gid":30}\n'), line);
  assertEquals(Object.keys(JSON.parse(line) as object), [
    ...AUDIT_KEYS,
    "peer_pid",
    "peer_uid",
    "peer_gid",
  ]);
});

Deno.test("jsonString escapes backslash, quote and the five short control escapes", () => {
  assertEquals(jsonString("a\\b"), '"a\\\\b"');
  assertEquals(jsonString('say "hi"'), '"say \\"hi\\""');
  assertEquals(jsonString("\b\f\n\r\t"), '"\\b\\f\\n\\r\\t"');
  assertEquals(jsonString(""), '""');
  assertEquals(jsonString(null), "null");
  assertEquals(jsonString("plain /text"), '"plain /text"');
});

Deno.test("jsonString writes other control bytes as lowercase \\u00xx", () => {
  assertEquals(jsonString("\x01"), '"\\u0001"');
  assertEquals(jsonString("\x0b"), '"\\u000b"');
  assertEquals(jsonString("\x0e"), '"\\u000e"');
  assertEquals(jsonString("\x1b"), '"\\u001b"');
  assertEquals(jsonString("\x1f"), '"\\u001f"');
  assertEquals(jsonString("a\x1ab"), '"a\\u001ab"');
  // Every byte below 0x20 except the five short ones, exactly.
  let all = "";
  for (let c = 1; c < 0x20; c++) all += String.fromCharCode(c);
  assertEquals(
    jsonString(all),
    '"\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r' +
      "\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019" +
      '\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f"',
  );
});

Deno.test("jsonString escapes 0x7f, keeps valid UTF-8 raw and writes \\ufffd for invalid bytes", () => {
  assertEquals(jsonString("\x7f"), '"\\u007f"');
  assertEquals(jsonString("\x80\xff"), '"\\ufffd\\ufffd"');
  // A UTF-8 name as a binary string stays as its raw bytes.
  const binary = toBinary(enc("é"));
  assertEquals(jsonString(binary), '"\xc3\xa9"');
  assertEquals(jsonString("a/\u007fb"), '"a/\\u007fb"');
  // A truncated sequence, an overlong form and a surrogate are invalid, byte by byte.
  assertEquals(jsonString("\xc3"), '"\\ufffd"');
  assertEquals(jsonString("\xc0\xaf"), '"\\ufffd\\ufffd"');
  assertEquals(jsonString("\xed\xa0\x80"), '"\\ufffd\\ufffd\\ufffd"');
});

Deno.test("jsonString stops at the first NUL", () => {
  assertEquals(jsonString("ab\0cd"), '"ab"');
  assertEquals(jsonString("\0abc"), '""');
  assertEquals(jsonString("a\\\0\n"), '"a\\\\"');
});

Deno.test("formatRecord escapes names, job ids, digests and errors", () => {
  const line = formatRecord(
    1n,
    rec({ name: "a\tb\nc", jobId: 'j"1', digest: "d\\", error: "e\x02" }),
  );
  ok(line.includes('"name":"a\\tb\\nc"'), line);
  ok(line.includes('"job_id":"j\\"1"'), line);
  ok(line.includes('"digest":"d\\\\"'), line);
  ok(line.includes('"error":"e\\u0002"'), line);
  const parsed = JSON.parse(line) as Record<string, unknown>;
  assertEquals([parsed.name, parsed.job_id, parsed.error], ["a\tb\nc", 'j"1', "e\x02"]);
});

Deno.test("realtimeNs reads CLOCK_REALTIME in nanoseconds", () => {
  const before = BigInt(Date.now()) * 1_000_000n;
  const t = realtimeNs();
  const after = BigInt(Date.now() + 1) * 1_000_000n;
  ok(t >= before - 1_000_000n && t <= after, `${before} <= ${t} <= ${after}`);
});

Deno.test("AuditLog writes nothing until flush, then whole lines in one write", () => {
  const guard = fdGuard();
  {
    using p = pipe();
    setNonblocking(p.readFd, true);
    const log = new AuditLog(p.writeFd);
    log.line("memfdbus broker listening on /tmp/x.sock");
    log.record(rec({ objectId: 1, name: "a", size: 5 }));
    log.record(blankRecord("list", "ok", null));
    assertEquals(tryReadFd(p.readFd), null);
    assertEquals(log.records, 2);
    log.flush();
    const text = dec(tryReadFd(p.readFd) ?? new Uint8Array());
    ok(text.endsWith("\n"), text);
    const lines = text.split("\n");
    assertEquals(lines.length, 4);
    assertEquals(lines[0], "memfdbus broker listening on /tmp/x.sock");
    assertEquals(lines[3], "");
    const first = JSON.parse(lines[1] ?? "") as Record<string, unknown>;
    const second = JSON.parse(lines[2] ?? "") as Record<string, unknown>;
    assertEquals(Object.keys(first), AUDIT_KEYS);
    assertEquals([first.op, first.object_id, first.name, first.size], ["put", 1, "a", 5]);
    assertEquals([second.op, second.result], ["list", "ok"]);
    ok(typeof first.ts_ns === "number" && first.ts_ns > 1.6e18);
    // A second flush with nothing queued writes nothing.
    log.flush();
    assertEquals(tryReadFd(p.readFd), null);
  }
  guard.assertClean();
});

Deno.test("AuditLog writes a UTF-8 name's bytes unchanged and escapes DEL and invalid bytes", () => {
  using p = pipe();
  setNonblocking(p.readFd, true);
  const log = new AuditLog(p.writeFd);
  log.record(rec({ name: toBinary(enc("é\x7f")) + "\xff" }));
  log.flush();
  const bytes = tryReadFd(p.readFd) ?? new Uint8Array();
  const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  ok(text.includes('"name":"é\\u007f\\ufffd"'), text);
  ok(hex(bytes).includes(hex(enc('"name":"é'))));
  assertEquals(JSON.parse(text).name, "é\x7f\ufffd");
});

Deno.test("AuditLog adds peer credentials only when withPeer is set", () => {
  using p = pipe();
  setNonblocking(p.readFd, true);
  const log = new AuditLog(p.writeFd);
  const peer = { pid: 1, uid: 2, gid: 3 };
  log.record(blankRecord("list", "ok", null), peer);
  log.withPeer = true;
  log.record(blankRecord("list", "ok", null), peer);
  log.flush();
  const lines = dec(tryReadFd(p.readFd) ?? new Uint8Array()).trimEnd().split("\n");
  assertEquals(lines.length, 2);
  ok(lines[0]?.endsWith(',"error":null}'), lines[0]);
  ok(lines[1]?.endsWith(',"error":null,"peer_pid":1,"peer_uid":2,"peer_gid":3}'), lines[1]);
});

Deno.test("AuditLog hands more than a pipe buffer of lines to a reader completely and in order, over several flushes", async () => {
  using p = pipe();
  const log = new AuditLog(p.writeFd);
  const n = 2000; // about 400 KiB, several pipe buffers
  for (let i = 0; i < n; i++) log.record(rec({ objectId: i + 1, name: "x".repeat(150) }));
  // flush() writes only what the pipe takes without blocking; the reader is another process
  // (cat opens the same pipe through /proc and writes to a file).
  using dir = ownTempDir();
  const out = `${dir.path}/audit.out`;
  const child = new Deno.Command("sh", {
    args: ["-c", 'exec cat "$1" > "$2"', "sh", `/proc/${Deno.pid}/fd/${p.readFd}`, out],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  // Wait until cat has the pipe open, so the blocking write always has a reader.
  await waitFor(
    () => {
      try {
        return Deno.readLinkSync(`/proc/${child.pid}/exe`).endsWith("/cat") &&
          [...Deno.readDirSync(`/proc/${child.pid}/fd`)].length >= 4;
      } catch {
        return false;
      }
    },
    { what: "cat to open the pipe" },
  );
  log.flush();
  await waitFor(
    () => {
      log.flush();
      return !log.waiting;
    },
    { what: "the audit log to hand everything to cat", timeoutMs: 30_000 },
  );
  p.closeWrite();
  p.closeRead();
  const status = await child.status;
  assertEquals(status.code, 0);
  const lines = Deno.readTextFileSync(out).split("\n");
  assertEquals(lines.length, n + 1);
  assertEquals(lines[n], "");
  for (let i = 0; i < n; i++) {
    const r = JSON.parse(lines[i] ?? "") as Record<string, unknown>;
    if (r.object_id !== i + 1) throw new Error(`line ${i} has object_id ${r.object_id}`);
  }
});

Deno.test("AuditLog on a pipe whose reader closed does not throw and stops logging (D22)", () => {
  const guard = fdGuard();
  {
    using broken = pipe();
    using fresh = pipe();
    setNonblocking(fresh.readFd, true);
    const printed: string[] = [];
    const log = new AuditLog(broken.writeFd, { report: (m) => printed.push(m) });
    broken.closeRead();
    log.record(rec({ objectId: 1 }));
    log.flush();
    assertEquals(printed, [
      "memfdbus: audit log write failed (EPIPE: Broken pipe); audit records are dropped",
    ]);
    // Point the log's descriptor number at a healthy pipe: nothing more may be written to it.
    ok(libc.symbols.dup3(fresh.writeFd, broken.writeFd, 0) === broken.writeFd);
    log.record(rec({ objectId: 2 }));
    log.line("late line");
    log.flush();
    assertEquals(printed.length, 1);
    assertEquals(tryReadFd(fresh.readFd), null);
    assertEquals(log.records, 2);
  }
  guard.assertClean();
});

Deno.test("AuditLog on a closed descriptor reports once and keeps going", () => {
  const printed: string[] = [];
  const log = new AuditLog(987654, { report: (m) => printed.push(m) });
  log.record(rec({}));
  log.flush();
  log.record(rec({}));
  log.flush();
  assertEquals(printed, [
    "memfdbus: audit log write failed (EBADF: Bad file descriptor); audit records are dropped",
  ]);
});

Deno.test("AuditLog on a pipe nobody reads never blocks: it holds lines up to its bound, drops and counts the rest, and reports them once the reader catches up", () => {
  using p = pipe();
  setNonblocking(p.readFd, true);
  const printed: string[] = [];
  let counted = 0;
  const log = new AuditLog(p.writeFd, {
    report: (m) => printed.push(m),
    bufferBytes: 256 * 1024,
    onDropped: (n) => (counted += n),
  });
  // The pipe buffer (64 KiB) fills, then the log's own 256 KiB; every flush returns at once.
  const n = 3000;
  for (let i = 0; i < n; i++) {
    log.record(rec({ objectId: i + 1, name: "y".repeat(150) }));
    if (i % 100 === 0) log.flush();
  }
  log.flush();
  ok(log.waiting);
  ok(log.dropped > 0 && log.dropped === counted, `${log.dropped} dropped, ${counted} counted`);
  assertEquals(printed, []);
  // The reader comes back: everything held is written, in order, whole lines only.
  let text = "";
  for (;;) {
    const chunk = tryReadFd(p.readFd);
    if (chunk !== null) text += dec(chunk);
    log.flush();
    if (!log.waiting && chunk === null) break;
  }
  const lines = text.trimEnd().split("\n");
  assertEquals(lines.length + counted, n);
  lines.forEach((l, i) => assertEquals(JSON.parse(l).object_id, i + 1));
  assertEquals(printed, [
    `memfdbus broker: the audit output stalled: ${counted} audit records were dropped`,
  ]);
  assertEquals(log.dropped, 0);
});

Deno.test("AuditLog to a file drops nothing when one loop turn brings more than its bound: the full buffer goes to the file first", () => {
  using dir = ownTempDir();
  const path = `${dir.path}/audit.log`;
  Deno.writeFileSync(path, new Uint8Array());
  const fd = tryOpen(path, O_WRONLY);
  ok(fd >= 0, `open: ${fd}`);
  try {
    let counted = 0;
    const log = new AuditLog(fd, {
      clock: () => 7n,
      bufferBytes: 4096,
      onDropped: (n) => (counted += n),
    });
    // 200 records of ~400 bytes (80 KiB, 20 times the bound) without a flush in between, as
    // when many connections close in one turn.
    for (let i = 0; i < 200; i++) log.record(rec({ objectId: i + 1, name: "z".repeat(300) }));
    log.flush();
    assertEquals([counted, log.dropped, log.waiting], [0, 0, false]);
    const lines = dec(Deno.readFileSync(path)).trimEnd().split("\n");
    assertEquals(
      lines.map((l) => JSON.parse(l).object_id),
      [...Array(200).keys()].map((i) => i + 1),
    );
  } finally {
    libc.symbols.close(fd);
  }
});

Deno.test("AuditLog to a file keeps ASCII and non-ASCII lines in order and byte for byte past its staging buffer", () => {
  using dir = ownTempDir();
  const path = `${dir.path}/audit.log`;
  Deno.writeFileSync(path, new Uint8Array());
  const fd = tryOpen(path, O_WRONLY);
  ok(fd >= 0, `open: ${fd}`);
  try {
    const log = new AuditLog(fd, { clock: () => 7n });
    const expected: string[] = [];
    for (let i = 0; i < 600; i++) {
      // Every seventh name holds UTF-8 bytes (a binary string), the rest plain ASCII; 600 lines
      // are about 200 KiB, several times the staging buffer.
      const name = i % 7 === 0 ? toBinary(enc(`é-${i}`)) : `${"n".repeat(200)}-${i}`;
      const r = rec({ objectId: i + 1, name });
      log.record(r);
      expected.push(formatRecord(7n, r));
      if (i % 250 === 0) log.flush();
    }
    log.flush();
    assertEquals(log.waiting, false);
    const want = Uint8Array.from(expected.join(""), (c) => c.charCodeAt(0));
    assertEquals(hex(Deno.readFileSync(path)), hex(want));
  } finally {
    libc.symbols.close(fd);
  }
});
