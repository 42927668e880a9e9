/**
 * The per-uid audit budget (src/core/audit_budget.ts): a token bucket of audit bytes per uid,
 * driven with explicit times (ms), the summary of dropped records, its text and record, and the
 * options and config keys that set it. No clock, no sleeps.
 */

import { assertEquals, ok, rejects, throws } from "../support/assert.ts";
import {
  AUDIT_BURST_FACTOR,
  AuditBudget,
  Charge,
  DEFAULT_AUDIT_UID_RATE,
  defaultAuditBurst,
  droppedText,
  rateText,
} from "../../src/core/audit_budget.ts";
import { droppedRecord, formatRecord } from "../../src/core/audit.ts";
import { defaultBrokerOptions, parseBrokerArgs } from "../../src/core/options.ts";
import { parseConfig } from "../../src/core/config.ts";
import { UsageError } from "../../src/errors.ts";

const KiB = 1024;

Deno.test("a uid writes its burst, then its rate; the rest is dropped and counted", () => {
  const b = new AuditBudget({ rate: 64 * KiB, burst: 128 * KiB, exempt: [0, 1000] });
  let written = 0;
  let dropped = 0;
  // 1 KiB records, 1000 a second for 10 s: 10 MB offered, 128 KiB + 640 KiB allowed.
  for (let t = 0; t < 10_000; t++) {
    const c = b.charge(65534, KiB, t);
    if (c === Charge.DROP) dropped++;
    else written++;
  }
  assertEquals(written + dropped, 10_000);
  const allowed = (128 * KiB + 64 * KiB * 10) / KiB;
  ok(written <= allowed && written >= allowed - 2, `${written} written, ${allowed} allowed`);
  const s = b.takeSummary(65534);
  ok(s !== null);
  // Summaries went out at most once a second while the uid kept going (taken here: the rest).
  ok(s.records > 0 && s.records <= dropped, `${s.records} of ${dropped}`);
  assertEquals(s.bytes, s.records * KiB);
  assertEquals(b.takeSummary(65534), null);
});

Deno.test("the first record that fits again brings the summary first, at most once a second", () => {
  const b = new AuditBudget({ rate: 1000, burst: 1000, exempt: [0] });
  assertEquals(b.charge(7, 1000, 0), Charge.WRITE); // the whole burst
  assertEquals(b.charge(7, 300, 100), Charge.DROP); // 100 bytes back
  assertEquals(b.charge(7, 200, 150), Charge.DROP); // 150 bytes back
  assertEquals(b.charge(7, 100, 200), Charge.SUMMARY_FIRST); // 200 back: it fits
  assertEquals(b.takeSummary(7), { uid: 7, records: 2, bytes: 500, peer: undefined });
  // Dropped again within the second: summed, but no summary before the next record that fits.
  assertEquals(b.charge(7, 900, 300), Charge.DROP);
  assertEquals(b.charge(7, 50, 400), Charge.WRITE);
  assertEquals(b.charge(7, 900, 500), Charge.DROP);
  assertEquals(b.charge(7, 50, 1199), Charge.WRITE); // 999 ms after the last summary
  assertEquals(b.charge(7, 50, 1200), Charge.SUMMARY_FIRST);
  assertEquals(b.takeSummary(7)?.records, 2);
  assertEquals(b.takeSummary(7), null);
});

Deno.test("uids have their own buckets; exempt uids are recognised", () => {
  const b = new AuditBudget({ rate: 100, burst: 100, exempt: [0, 1000] });
  ok(b.exempt(0) && b.exempt(1000) && !b.exempt(65534) && !b.exempt(1));
  assertEquals(b.charge(1, 100, 0), Charge.WRITE);
  assertEquals(b.charge(1, 1, 0), Charge.DROP);
  assertEquals(b.charge(2, 100, 0), Charge.WRITE);
  assertEquals(b.size, 2);
});

Deno.test("a record longer than the whole burst passes on a full bucket, and its debt is paid first", () => {
  const b = new AuditBudget({ rate: 1000, burst: 1000, exempt: [] });
  assertEquals(b.charge(5, 3000, 0), Charge.WRITE); // full bucket: 2000 bytes of debt
  assertEquals(b.charge(5, 10, 1000), Charge.DROP); // -1000
  assertEquals(b.charge(5, 10, 2000), Charge.DROP); // 0
  assertEquals(b.charge(5, 10, 2010), Charge.SUMMARY_FIRST); // 10
  assertEquals(b.takeSummary(5)?.records, 2);
  // Never refilled past the burst, however long the pause.
  assertEquals(b.charge(5, 1000, 1_000_000), Charge.WRITE);
  assertEquals(b.charge(5, 1, 1_000_000), Charge.DROP);
});

Deno.test("the sweep writes the summaries of quiet uids once their budget allows, and forgets full buckets", () => {
  const b = new AuditBudget({ rate: 1000, burst: 1000, exempt: [] });
  const peer = { pid: 9, uid: 5, gid: 5 };
  b.charge(5, 1000, 0, peer);
  b.charge(5, 400, 0, peer);
  b.charge(5, 400, 0, peer);
  // Empty bucket: nothing is due yet.
  assertEquals(b.sweep(0), []);
  assertEquals(b.sweep(100), [{ uid: 5, records: 2, bytes: 800, peer }]);
  assertEquals(b.sweep(200), []);
  assertEquals(b.size, 1); // not full yet
  // Dropped again right after: not summed up again before a second has passed.
  b.charge(5, 900, 300, peer);
  assertEquals(b.sweep(1099), []);
  assertEquals(b.sweep(1100)[0]?.records, 1);
  assertEquals(b.sweep(5000), []);
  assertEquals(b.size, 0);
  // At stop every summary owed is given, whatever the budget.
  b.charge(6, 1000, 6000);
  b.charge(6, 1000, 6000);
  assertEquals(b.sweep(6000, true).map((s) => [s.uid, s.records]), [[6, 1]]);
});

Deno.test("the summary's text and record: twelve keys, op audit, result dropped", () => {
  assertEquals(rateText(1 << 20), "1 MiB/s");
  assertEquals(rateText(64 * KiB), "64 KiB/s");
  assertEquals(rateText(1000), "1000 B/s");
  assertEquals(rateText(3 * 2 ** 30), "3 GiB/s");
  const s = { uid: 65534, records: 2570, bytes: 171_000_000, peer: undefined };
  const text = droppedText(s, DEFAULT_AUDIT_UID_RATE);
  assertEquals(text, "uid 65534 exceeded its audit share (1 MiB/s): 2570 records dropped");
  const line = formatRecord(5n, droppedRecord(s.records, s.bytes, text));
  assertEquals(
    line,
    '{"ts_ns":5,"op":"audit","operation":"audit","result":"dropped","selector":null,' +
      '"object_id":null,"name":null,"size":171000000,"count":2570,"digest":null,' +
      `"job_id":null,"error":"${text}"}\n`,
  );
  assertEquals(Object.keys(JSON.parse(line)).length, 12);
});

Deno.test("--audit-uid-rate and --audit-uid-burst take byte counts; the burst defaults to 16x the rate", () => {
  assertEquals(AUDIT_BURST_FACTOR, 16);
  const d = defaultBrokerOptions();
  assertEquals([d.auditUidRate, d.auditUidBurst], [1 << 20, null]);
  assertEquals(defaultAuditBurst(d.auditUidRate), 16 << 20);
  const o = parseBrokerArgs(["--audit-uid-rate", "64KiB", "--audit-uid-burst", "100000"]);
  assertEquals([o.auditUidRate, o.auditUidBurst], [65536, 100000]);
  assertEquals(parseBrokerArgs(["--audit-uid-rate", "2 MiB"]).auditUidRate, 2 << 20);
  for (const bad of ["0", "-1", "1.5", "1MB", "", "x", "9007199254740992"]) {
    throws(() => parseBrokerArgs(["--audit-uid-rate", bad]), (e: unknown) => {
      ok(e instanceof UsageError);
      assertEquals(e.message, `invalid --audit-uid-rate: ${bad}`);
      return true;
    });
  }
});

Deno.test("config auditUidRate and auditUidBurst take byte counts like the other byte settings", async () => {
  const base = defaultBrokerOptions();
  const { options } = await parseConfig(
    '{ "auditUidRate": "1MiB", "auditUidBurst": 4194304 }',
    "c.jsonc",
    base,
  );
  assertEquals([options.auditUidRate, options.auditUidBurst], [1 << 20, 4 << 20]);
  await rejects(parseConfig('{\n "auditUidRate": "fast" }', "c.jsonc", base), {
    name: "UsageError",
    message: "c.jsonc:2: auditUidRate: expected a byte count from 1 to 9007199254740991, " +
      'such as 1048576 or "1MiB"',
  });
  await rejects(parseConfig('{ "auditUidRat": 5 }', "c.jsonc", base), {
    message: 'c.jsonc:1: auditUidRat: unknown key (did you mean "auditUidRate"?)',
  });
});

Deno.test("owing counts the uids whose drops are not summed up yet", () => {
  const b = new AuditBudget({ rate: 100, burst: 100, exempt: [] });
  assertEquals(b.owing, 0);
  b.charge(1, 100, 0);
  b.charge(1, 100, 0);
  b.charge(1, 100, 0);
  b.charge(2, 100, 0);
  b.charge(2, 100, 0);
  assertEquals(b.owing, 2);
  b.takeSummary(1);
  assertEquals(b.owing, 1);
  b.sweep(10_000);
  assertEquals(b.owing, 0);
});
