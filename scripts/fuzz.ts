/**
 * `deno task fuzz`: the seeded protocol fuzzer of tests/fault/fuzz_test.ts, long. It runs cases
 * against a live broker for --seconds (default 120) and, unless --seconds is given alone, at
 * least --min-cases (default 100,000; never past --max-seconds): `--seconds 15` runs about 15 s
 * (plus the final checkpoint), and the first line says what bounds the run, checking after every case that the broker answered or closed within
 * a bound, and every --check-every cases that it is alive, that its audit log is valid and
 * complete, and that it holds exactly its fixed descriptors plus one per stored object (then it
 * drops everything and checks the fixed set again). Prints the seed; replay with --seed and
 * --from. Exit status 1 on any violation.
 *
 * @module
 */

import { Client } from "../src/client.ts";
import { dropIds, listText, runRange, type Violation } from "../tests/support/fuzz_engine.ts";
import { countListLines, rssKiB } from "../tests/support/faults.ts";
import { letTimePass as sleep } from "../tests/support/wait.ts";
import { numberFlags, StreamingBroker } from "../tests/support/long_run.ts";

const USAGE = `usage: deno task fuzz [--seconds 120] [--min-cases 100000] [--max-seconds 600]
                      [--seed N] [--from 0] [--cases N] [--concurrency 12] [--check-every 10000]
                      [--request-timeout-ms 300] [--max-wait-ms 200]`;

const flags = numberFlags(Deno.args, {
  seconds: 120,
  minCases: 100_000,
  maxSeconds: 600,
  seed: Number.NaN,
  from: 0,
  cases: Number.POSITIVE_INFINITY,
  concurrency: 12,
  checkEvery: 10_000,
  requestTimeoutMs: 300,
  maxWaitMs: 200,
}, USAGE);
// An explicit --seconds without --min-cases is a time budget: the case floor does not stretch it.
const given = (flag: string): boolean => Deno.args.some((a) => a === flag);
if (given("--seconds") && !given("--min-cases")) flags.minCases = 0;
const seed = Number.isNaN(flags.seed)
  ? crypto.getRandomValues(new Uint32Array(1))[0] ?? 1
  : flags.seed >>> 0;
const replaying = Number.isFinite(flags.cases);
const plan = replaying
  ? `cases ${flags.from}..${flags.from + flags.cases - 1}`
  : `for ${flags.seconds} s` +
    (flags.minCases > 0
      ? ` and at least ${flags.minCases} cases (at most ${flags.maxSeconds} s)`
      : "");
console.log(`fuzz: seed ${seed}, ${plan}`);

const dir = Deno.makeTempDirSync({ prefix: "memfdbus-fuzz-" });
// Descriptors are counted per object (the checkpoint's invariant): identical contents must not
// share a memfd, as they do with dedup on (tests/fault/fuzz_test.ts runs the same way).
const broker = await StreamingBroker.start(`${dir}/fuzz.sock`, [
  "--no-dedup",
  "--request-timeout-ms",
  String(flags.requestTimeoutMs),
  "--max-wait-ms",
  String(flags.maxWaitMs),
]);
const bounds = {
  replyMs: flags.requestTimeoutMs + flags.maxWaitMs + 5000,
  closeMs: 5000,
};

/** Wait until the broker's descriptor count settles at `expected`; returns the last count. */
async function settleFds(expected: number, ms = 10_000): Promise<number> {
  const end = performance.now() + ms;
  let n = broker.fdCount();
  while (n !== expected && performance.now() < end) {
    await sleep(25);
    n = broker.fdCount();
  }
  return n;
}

// The fixed set: descriptors once each request kind has run once and every connection is gone.
{
  await using c = new Client({ socket: broker.socket, jobId: null });
  const { id } = await c.put(new TextEncoder().encode("warm-up"), { name: "warm" });
  (await c.get(id)).close();
  await c.list();
  await c.drop(id);
}
await sleep(300);
const baseline = broker.fdCount();
const rssStart = rssKiB(broker.pid);

const t0 = performance.now();
const violations: Violation[] = [];
const failures: string[] = [];
let ran = 0;
let headers = 0;
let abandoned = 0;
let checkpoints = 0;
let next = flags.from;
const end = flags.from + (replaying ? flags.cases : Number.MAX_SAFE_INTEGER);

const elapsed = (): number => (performance.now() - t0) / 1000;
const keepGoing = (): boolean => {
  if (next >= end || violations.length > 0 || failures.length > 0) return false;
  if (replaying) return elapsed() < flags.maxSeconds;
  if (elapsed() < flags.seconds) return true;
  return ran < flags.minCases && elapsed() < flags.maxSeconds;
};

async function checkpoint(): Promise<void> {
  checkpoints++;
  if (!broker.running) {
    failures.push(`the broker exited: ${JSON.stringify(broker.exited)} ${broker.stderr}`);
    return;
  }
  if (broker.stderr !== "") failures.push(`broker stderr: ${broker.stderr}`);
  // Let the broker flush its audit log, then compare its account with its descriptors.
  let records = -1;
  while (records !== broker.records) {
    records = broker.records;
    await sleep(150);
  }
  // Every delivered header owes a record (parked waits whose client left are not logged).
  if (broker.records < headers - abandoned) {
    failures.push(`${broker.records} audit records for ${headers - abandoned} requests`);
  }
  if (broker.badLines.length > 0) failures.push(`bad audit lines: ${broker.badLines.slice(0, 3)}`);
  const ids = [...broker.live.keys()];
  const stored = ids.length;
  const withObjects = await settleFds(baseline + stored);
  if (withObjects !== baseline + stored) {
    failures.push(
      `after ${ran} cases: ${withObjects} descriptors for ${stored} objects (fixed set ${baseline})`,
    );
  }
  if (countListLines(await listText(broker.socket)) > stored) {
    failures.push("LIST shows more objects");
  }
  await dropIds(broker.socket, ids);
  if ((await listText(broker.socket)) !== "") failures.push("objects left after dropping all");
  const empty = await settleFds(baseline);
  if (empty !== baseline) failures.push(`after dropping everything: ${empty} descriptors`);
  const rate = ran / elapsed();
  console.log(
    `  ${ran} cases, ${elapsed().toFixed(0)} s, ${rate.toFixed(0)}/s, ` +
      `${stored} objects dropped, fds ${withObjects}->${empty} (fixed ${baseline}), ` +
      `rss ${rssKiB(broker.pid)} KiB`,
  );
}

while (keepGoing()) {
  const to = Math.min(end, next + flags.checkEvery);
  // Run the slice in pieces so the time bound is honoured.
  while (next < to && keepGoing()) {
    const step = Math.min(to, next + flags.concurrency * 50);
    const r = await runRange(broker.socket, seed, next, step, {
      concurrency: flags.concurrency,
      bounds,
      stopAfter: 20,
    });
    ran += r.ran;
    headers += r.headers;
    abandoned += r.abandoned;
    violations.push(...r.violations);
    next = step;
    if (!broker.running) break;
  }
  await checkpoint();
}

const seconds = elapsed();
const rssEnd = broker.running ? rssKiB(broker.pid) : 0;
const status = await broker.stop("SIGTERM");
if (status.code !== 0) failures.push(`broker exit status ${status.code} (${status.signal})`);
Deno.removeSync(dir, { recursive: true });

for (const v of violations) {
  console.log(`VIOLATION seed ${seed} case ${v.index} (${v.label}): ${v.problem}`);
  console.log(`  replay: deno task fuzz --seed ${seed} --from ${v.index} --cases 1`);
}
for (const f of failures) console.log(`FAILURE ${f}`);
if (!replaying && ran < flags.minCases) {
  console.log(`NOTE: ${ran} cases ran before --max-seconds (target ${flags.minCases})`);
}
const ok = violations.length === 0 && failures.length === 0;
console.log(
  `fuzz ${ok ? "PASS" : "FAIL"}: seed=${seed} cases=${ran} headers=${headers} ` +
    `parked_waits_left=${abandoned} violations=${violations.length} failures=${failures.length} ` +
    `checkpoints=${checkpoints} duration=${seconds.toFixed(1)}s rate=${
      (ran / seconds).toFixed(0)
    }/s ` +
    `fd_fixed_set=${baseline} broker_rss_kib=${rssStart}->${rssEnd} audit_records=${broker.records}`,
);
Deno.exit(ok ? 0 : 1);
