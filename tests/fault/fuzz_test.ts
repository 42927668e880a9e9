/**
 * Seeded fuzzing: the live broker (random and mutated requests with hostile descriptors), the
 * pure wire codec, and the request handlers driven directly with random bytes and EOFs.
 * Set MEMFDBUS_FUZZ_SEED to run another seed; failures print the seed and the case number.
 */

import { assertEquals, ok } from "../support/assert.ts";
import { Client } from "../../src/client.ts";
import { digestBytes } from "../../src/hash/digest.ts";
import { closeQuietly, libc } from "../../src/ffi.ts";
import { Seal } from "../../src/sys/memfd.ts";
import { type BrokerOptions, defaultBrokerOptions } from "../../src/core/options.ts";
import { OPEN_POLICY } from "../../src/core/policy.ts";
import {
  handle,
  type Outcome,
  type RequestContext,
  type StepInput,
} from "../../src/core/handlers.ts";
import { Store, type StoredObject } from "../../src/core/store.ts";
import { checkSealedFd, sealsOf } from "../../src/broker/descriptors.ts";
import {
  Cmd,
  decodeHeader,
  DIGEST_LEN,
  DIGEST_PREFIX,
  encodeHeader,
  type Header,
  HEADER_SIZE,
  isValidDigest,
  isValidHeader,
  MAGIC,
  requestBytes,
  VERSION,
} from "../../src/protocol/wire.ts";
import {
  alive,
  AUDIT_KEYS,
  type AuditLine,
  type BrokerProcess,
  sealedMemfd,
  tempDir,
} from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";
import { countListLines, expectFdCount, isKnownText, startBroker } from "../support/faults.ts";
import { makePipe } from "../support/fds.ts";
import { caseRng, dropIds, listText, liveIds, type Rng, runRange } from "../support/fuzz_engine.ts";
import { cstr } from "../../src/ffi.ts";
import { O_CLOEXEC, O_RDONLY } from "../../src/sys/linux.ts";

const SEED = Number(Deno.env.get("MEMFDBUS_FUZZ_SEED") ?? "20240611") >>> 0;
const enc = new TextEncoder();

/** Warm the broker up (first request paths, lazily opened descriptors) and return its fd count. */
async function warmBaseline(broker: BrokerProcess): Promise<number> {
  {
    await using c = new Client({ socket: broker.socket, jobId: null });
    const { id } = await c.put(enc.encode("warm-up"), { name: "warm" });
    using obj = await c.get(id);
    ok(await obj.verify());
    await c.list();
    await c.drop(id);
  }
  return await broker.settledFdCount();
}

Deno.test(`the live broker answers or cleanly closes 2,000 seeded fuzz cases without leaking descriptors (seed ${SEED})`, async () => {
  using dir = tempDir();
  // Descriptors are counted per object: identical contents are not shared (see dedup tests).
  await using broker = await startBroker(dir.path, [
    "--no-dedup",
    "--request-timeout-ms",
    "300",
    "--max-wait-ms",
    "200",
  ]);
  const baseline = await warmBaseline(broker);
  const before = broker.lines.length;
  const result = await runRange(broker.socket, SEED, 0, 2000, {
    concurrency: 8,
    bounds: { replyMs: 5000, closeMs: 3000 },
  });
  const report = result.violations.map((v) =>
    `seed ${SEED} case ${v.index} (${v.label}): ${v.problem}`
  );
  assertEquals(report, []);
  assertEquals(result.ran, 2000);
  ok(alive(broker.pid), "the broker is still running");
  assertEquals(broker.stderr, "");

  // Every audit line is a complete JSON record; every delivered header got at least one record
  // (minus parked waits whose client left, which the broker drops; see the slow-client suite).
  const lines = await waitFor(() => {
    const l = broker.lines.slice(before);
    return l.length >= result.headers - result.abandoned ? l : null;
  }, { what: "an audit record for every delivered header" }).catch(() =>
    broker.lines.slice(before)
  );
  ok(
    lines.length >= result.headers - result.abandoned,
    `${lines.length} audit records for ${result.headers} headers (${result.abandoned} parked waits left)`,
  );
  const records = lines.map((l) => JSON.parse(l) as AuditLine);
  for (const r of records) assertEquals(Object.keys(r), AUDIT_KEYS);

  // One descriptor per stored object plus the fixed set, once every connection is gone.
  const live = liveIds(records);
  ok(live.size > 0, "some fuzz cases stored objects");
  await expectFdCount(broker, baseline + live.size);
  ok(countListLines(await listText(broker.socket)) <= live.size);

  assertEquals(await dropIds(broker.socket, live), live.size);
  assertEquals(await listText(broker.socket), "", "nothing is left after dropping every object");
  await expectFdCount(broker, baseline);
  assertEquals((await broker.stop()).code, 0);
});

// ---- the pure codec ---------------------------------------------------------------------------

const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;

Deno.test("the wire codec decodes any 48 bytes, re-encodes them unchanged and rejects short input", () => {
  for (let i = 0; i < 20_000; i++) {
    const r = caseRng(SEED ^ 0x5a5a, i);
    const n = r.chance(0.1) ? r.int(HEADER_SIZE) : HEADER_SIZE + r.int(16);
    const bytes = r.bytes(n);
    if (r.chance(0.5) && n >= 6) {
      new DataView(bytes.buffer).setUint32(0, MAGIC, true);
      new DataView(bytes.buffer).setUint16(4, VERSION, true);
    }
    if (n < HEADER_SIZE) {
      let threw: unknown = null;
      try {
        decodeHeader(bytes);
      } catch (e) {
        threw = e;
      }
      ok(threw instanceof RangeError, `case ${i}: ${n} bytes must throw RangeError`);
      continue;
    }
    const h = decodeHeader(bytes);
    assertEquals(encodeHeader(h), bytes.subarray(0, HEADER_SIZE), `case ${i}`);
    const sum = h.nameLen + h.textLen + h.jobLen + h.allowLen;
    assertEquals(requestBytes(h), sum);
    ok(Number.isSafeInteger(sum) && sum <= 4 * 0xffffffff);
    const dv = new DataView(bytes.buffer);
    assertEquals(isValidHeader(h), dv.getUint32(0, true) === MAGIC && dv.getUint16(4, true) === 1);
    // Encoding into a view at an offset leaves the bytes around it alone.
    const big = new Uint8Array(HEADER_SIZE + 8).fill(0xaa);
    encodeHeader(h, big.subarray(4, 4 + HEADER_SIZE));
    assertEquals([...big.subarray(0, 4), ...big.subarray(HEADER_SIZE + 4)], Array(8).fill(0xaa));
    assertEquals(big.subarray(4, 4 + HEADER_SIZE), bytes.subarray(0, HEADER_SIZE));
  }
});

Deno.test("digest validation agrees with the sha256:<64 lowercase hex> grammar on random and mutated strings", () => {
  const alphabet = "0123456789abcdefABCDEFsha:256gxyz \0\u00e9";
  for (let i = 0; i < 20_000; i++) {
    const r = caseRng(SEED ^ 0xd16e, i);
    let s: string;
    if (r.chance(0.5)) {
      s = digestBytes(r.bytes(r.int(20)));
      const chars = [...s];
      const k = r.int(4);
      for (let j = 0; j < k; j++) {
        const at = r.int(chars.length + 1);
        const op = r.int(3);
        const c = alphabet[r.int(alphabet.length)] ?? "x";
        if (op === 0) chars.splice(at, 1);
        else if (op === 1) chars.splice(at, 0, c);
        else chars[Math.min(at, chars.length - 1)] = c;
      }
      s = chars.join("");
    } else {
      s = DIGEST_PREFIX +
        Array.from({ length: 60 + r.int(8) }, () => alphabet[r.int(alphabet.length)]).join("");
    }
    const bytes = Uint8Array.from([...s].map((c) => c.charCodeAt(0) & 0xff));
    const expected = DIGEST_RE.test(s) && s.length === DIGEST_LEN;
    assertEquals(isValidDigest(s), expected, `case ${i}: ${JSON.stringify(s)}`);
    if ([...s].every((c) => c.charCodeAt(0) < 256)) {
      assertEquals(isValidDigest(bytes), expected, `case ${i} (bytes)`);
    }
  }
});

// ---- the handlers, driven directly ------------------------------------------------------------

const U32 = 0xffffffff;

function randomOptions(r: Rng): BrokerOptions {
  const o = defaultBrokerOptions();
  if (r.chance(0.3)) o.maxNameBytes = 1 + r.int(12);
  if (r.chance(0.3)) o.maxRequestBytes = 1 + r.int(300);
  if (r.chance(0.3)) o.maxObjects = BigInt(1 + r.int(4));
  if (r.chance(0.3)) o.maxTotalBytes = BigInt(1 + r.int(200));
  if (r.chance(0.3)) o.maxListBytes = 1 + r.int(400);
  if (r.chance(0.4)) {
    o.policy = {
      requireJob: r.chance(0.5),
      protectNames: r.chance(0.5),
      jobs: r.chance(0.5) ? new Map([["alpha", { uids: [1000], gids: [] }]]) : new Map(),
    };
  } else {
    o.policy = OPEN_POLICY;
  }
  return o;
}

const NAMES = ["a", "b", "alpha", "n\0ul", ""].map((s) => enc.encode(s));
const JOBS = ["alpha", "beta", "\0x", "x\0"].map((s) => enc.encode(s));

function randomHeader(r: Rng): Header {
  const len = (): number =>
    r.chance(0.6) ? r.int(12) : r.pick([0, 70, 71, 72, 256, 257, 65536, 65537, U32]);
  return {
    magic: MAGIC,
    version: VERSION,
    cmd: r.chance(0.9) ? 1 + r.int(5) : r.int(1 << 16),
    status: r.u32(),
    jobLen: len(),
    objectId: r.chance(0.5) ? 0n : r.chance(0.8) ? BigInt(1 + r.int(6)) : r.u64(),
    size: r.chance(0.5) ? BigInt(r.int(40)) : r.u64(),
    nameLen: len(),
    textLen: len(),
    allowLen: len(),
    reserved: r.chance(0.8) ? 0 : r.u32(),
  };
}

/** Bytes for a read step: exact, structured, or an EOF (null). */
function feed(r: Rng, length: number, digest: string): Uint8Array | null {
  if (r.chance(0.08) || length > 70_000) return null;
  if (length === DIGEST_LEN && r.chance(0.6)) return enc.encode(digest);
  if (r.chance(0.5)) {
    const pool = r.chance(0.5) ? NAMES : JOBS;
    const p = r.pick(pool);
    if (p.length === length) return p;
  }
  if (length > 0 && length <= 8 && r.chance(0.5)) return enc.encode("abcdefgh".slice(0, length));
  return r.bytes(length);
}

interface Session {
  store: Store;
  options: BrokerOptions;
}

/** A header shaped like a real request of its command (lengths of real names and jobs). */
function shapedHeader(r: Rng, contentLength: number): Header {
  const cmd = r.pick([Cmd.PUT, Cmd.PUT, Cmd.PUT, Cmd.GET, Cmd.LIST, Cmd.DROP, Cmd.STAT]);
  const name = r.chance(0.9) ? 1 + r.int(5) : 0;
  const job = r.chance(0.5) ? 0 : 1 + r.int(5);
  const allow = job > 0 && r.chance(0.3) ? 1 + r.int(5) : 0;
  const byId = r.chance(0.4);
  return {
    magic: MAGIC,
    version: VERSION,
    cmd,
    status: 0,
    jobLen: job,
    objectId: cmd === Cmd.PUT || !byId ? 0n : BigInt(1 + r.int(8)),
    size: cmd === Cmd.PUT ? BigInt(contentLength) : 0n,
    nameLen: cmd === Cmd.LIST || (byId && cmd !== Cmd.PUT) ? 0 : name,
    textLen: cmd === Cmd.PUT ? DIGEST_LEN : 0,
    allowLen: cmd === Cmd.PUT ? allow : 0,
    reserved: r.chance(0.9) ? 0 : r.u32(),
  };
}

function runHandler(r: Rng, s: Session, i: number): void {
  const content = r.bytes(r.int(40));
  const h = r.chance(0.5) ? shapedHeader(r, content.length) : randomHeader(r);
  // A descriptor for the request: sealed memfd, unsealed memfd, pipe, or none.
  let fd = -1;
  const kind = h.cmd === Cmd.PUT && r.chance(0.5) ? 0 : r.int(5);
  if (kind <= 1) {
    const m = sealedMemfd(content, kind === 0 ? Seal.IMMUTABLE : Seal.SHRINK);
    fd = m.release();
    if (r.chance(0.5)) h.size = BigInt(content.length);
  } else if (kind === 2) {
    const [a, b] = makePipe();
    closeQuietly(b);
    fd = a;
  }
  const digest = digestBytes(content);
  const reopened: number[] = [];
  const released: StoredObject[] = [];
  const ctx: RequestContext = {
    store: s.store,
    options: s.options,
    fd,
    fdLost: r.chance(0.05),
    peer: r.chance(0.5) ? { uid: r.chance(0.5) ? 1000 : 0, gid: 0 } : undefined,
    reopen: (obj) => {
      const d = libc.symbols.open(cstr(`/proc/self/fd/${obj.fd}`), O_RDONLY | O_CLOEXEC, 0);
      if (d >= 0) reopened.push(d);
      return d;
    },
    release: (obj) => released.push(obj),
    checkSealed: checkSealedFd,
    seals: sealsOf,
    now: () => 1n,
  };
  const countBefore = s.store.count;
  const gen = handle(h, ctx);
  let input: StepInput = null;
  let outcome: Outcome | null = null;
  const where = `handler case ${i} (seed ${SEED}) ${
    JSON.stringify(h, (_k, v) => typeof v === "bigint" ? String(v) : v)
  }`;
  try {
    for (let steps = 0; steps < 20; steps++) {
      if (r.chance(0.03)) {
        // The connection closed: the broker returns the generator early.
        gen.return(undefined as never);
        break;
      }
      const step = gen.next(input);
      if (step.done) {
        outcome = step.value;
        break;
      }
      const st = step.value;
      if (st.kind === "read") input = feed(r, st.length, digest);
      else if (st.kind === "digest") {
        ok(st.fd === fd && st.fd >= 0, `${where}: digest of a foreign descriptor`);
        input = r.chance(0.1) ? { error: "digest verification short read" } : { digest };
      } else input = r.chance(0.5);
    }
  } catch (e) {
    throw new Error(`${where}: threw ${(e as Error).stack}`);
  }
  for (const d of reopened) if (outcome?.fd !== d) closeQuietly(d);
  for (const obj of released) closeQuietly(obj.fd);
  if (outcome === null) {
    if (fd >= 0) closeQuietly(fd);
    return;
  }
  const rh = decodeHeader(outcome.wire);
  ok(isValidHeader(rh), where);
  ok(rh.status <= 4, where);
  assertEquals(outcome.ok, rh.status === 0, where);
  // A streamed body (LIST) comes after the wire bytes, exactly as long as the header says.
  let streamed = 0;
  for (let c = outcome.stream?.next(4096); c != null; c = outcome.stream?.next(4096)) {
    streamed += c.length;
  }
  assertEquals(streamed, outcome.stream?.total ?? 0, where);
  assertEquals(outcome.wire.length + streamed, HEADER_SIZE + rh.nameLen + rh.textLen, where);
  assertEquals(outcome.segments.reduce((a, x) => a + x.bytes.length, 0), outcome.wire.length);
  if (!outcome.ok) {
    const text = new TextDecoder().decode(outcome.wire.subarray(HEADER_SIZE));
    ok(isKnownText(text), `${where}: unknown text ${JSON.stringify(text)}`);
    assertEquals(outcome.audit.error, text, where);
    ok(outcome.audit.result !== "ok", where);
    assertEquals(outcome.fd, -1, where);
  } else {
    assertEquals(outcome.audit.result, "ok", where);
    assertEquals(outcome.audit.error, null, where);
  }
  if (outcome.keptFd) {
    ok(outcome.ok && h.cmd === Cmd.PUT, `${where}: kept a descriptor without a PUT success`);
    assertEquals(s.store.count, countBefore + 1, where);
  } else {
    if (fd >= 0) closeQuietly(fd);
    if (h.cmd === Cmd.PUT) assertEquals(s.store.count, countBefore, where);
  }
  if (outcome.fd >= 0) {
    ok(outcome.ok && h.cmd === Cmd.GET, `${where}: a reply descriptor without a GET success`);
    ok(reopened.includes(outcome.fd), `${where}: a reply descriptor not from reopen()`);
    closeQuietly(outcome.fd);
  }
  ok(reopened.length <= 1, `${where}: ${reopened.length} reopens`);
  ok(
    reopened.every((d) => d === outcome?.fd),
    `${where}: a reopened descriptor was dropped (leaked in a broker)`,
  );
  if (h.cmd === Cmd.DROP && outcome.ok) {
    assertEquals(s.store.count, countBefore - 1, where);
    assertEquals(released.length, 1, where);
  } else {
    assertEquals(released.length, 0, `${where}: released without a DROP`);
  }
}

Deno.test("request handlers driven with random headers, bytes, EOFs and descriptors never throw", () => {
  let session: Session | null = null;
  let stored = 0;
  for (let i = 0; i < 20_000; i++) {
    const r = caseRng(SEED ^ 0x4a4d, i);
    if (session === null || i % 50 === 0) {
      if (session !== null) { for (const o of session.store.values()) closeQuietly(o.fd); }
      const options = randomOptions(r);
      session = { store: new Store(options), options };
    }
    const before = session.store.count;
    runHandler(r, session, i);
    if (session.store.count > before) stored++;
  }
  if (session !== null) { for (const o of session.store.values()) closeQuietly(o.fd); }
  ok(stored > 100, `only ${stored} PUTs were accepted: the fuzz does not reach the store`);
});
