/**
 * Issue 10, point 6 (pure logic): names reserved for a job in the policy, independent of the
 * store, and the rule for job ids the policy does not list.
 */

import { assertEquals, ok } from "../support/assert.ts";
import {
  checkJobClaim,
  checkReservation,
  type IdentityPolicy,
  OPEN_POLICY,
  PolicyText,
  reservationOf,
  unlistedJobsRule,
} from "../../src/core/policy.ts";
import { parseConfig } from "../../src/core/config.ts";
import { defaultBrokerOptions } from "../../src/core/options.ts";
import { UsageError } from "../../src/errors.ts";

const PATH = "/etc/policy.jsonc";

async function policyOf(text: string): Promise<IdentityPolicy> {
  return (await parseConfig(text, PATH, defaultBrokerOptions(), true)).options.policy;
}

async function refusal(text: string): Promise<string> {
  try {
    await parseConfig(text, PATH, defaultBrokerOptions(), true);
  } catch (e) {
    ok(e instanceof UsageError, `not a UsageError: ${e}`);
    return e.message;
  }
  throw new Error(`accepted: ${text}`);
}

const RESERVED = `{
  "reserve": {
    "model/": "trainer",
    "model/eval/": "evaluator",
    "report.csv": "ci",
    "tmp-*": "scratch",
    "sensor/température": "meteo",
  },
}`;

Deno.test("reserve: keys ending in / or * are prefixes, others exact names; texts name the key", async () => {
  const p = await policyOf(RESERVED);
  const enc = (s: string) => String.fromCharCode(...new TextEncoder().encode(s));
  const cases: [string, string | null, string | null][] = [
    // name, publisher, refusal
    ["model/a", "trainer", null],
    ["model/a", "other", 'object name is reserved for job trainer (policy reserve "model/")'],
    ["model/a", null, 'object name is reserved for job trainer (policy reserve "model/")'],
    // The longest prefix wins: the evaluator owns model/eval/, not the trainer.
    ["model/eval/x", "evaluator", null],
    [
      "model/eval/x",
      "trainer",
      'object name is reserved for job evaluator (policy reserve "model/eval/")',
    ],
    // "model/" is a prefix of names under it, not the name "model" itself.
    ["model", "anyone", null],
    ["report.csv", "ci", null],
    ["report.csv", "trainer", 'object name is reserved for job ci (policy reserve "report.csv")'],
    // An exact name is not a prefix.
    ["report.csv.bak", "anyone", null],
    ["tmp-", "scratch", null],
    ["tmp-1", "x", 'object name is reserved for job scratch (policy reserve "tmp-*")'],
    ["tmp", "x", null],
    // Names are compared as UTF-8 bytes (binary strings inside the broker).
    [enc("sensor/température"), enc("meteo"), null],
    [
      enc("sensor/température"),
      "x",
      `object name is reserved for job meteo (policy reserve "${enc("sensor/température")}")`,
    ],
    ["free", null, null],
  ];
  for (const [name, publisher, want] of cases) {
    assertEquals(checkReservation(p, name, publisher), want, `${name} by ${publisher}`);
  }
});

Deno.test("reserve: an exact name beats any prefix that also matches it", () => {
  const p: IdentityPolicy = {
    ...OPEN_POLICY,
    reserve: [
      { pattern: "a/", prefix: true, job: "pre", source: "a/" },
      { pattern: "a/b", prefix: false, job: "exact", source: "a/b" },
      { pattern: "a/b", prefix: true, job: "longer", source: "a/b*" },
    ],
  };
  assertEquals(reservationOf(p.reserve, "a/b")?.job, "exact");
  assertEquals(reservationOf(p.reserve, "a/bc")?.job, "longer");
  assertEquals(reservationOf(p.reserve, "a/c")?.job, "pre");
  assertEquals(reservationOf(p.reserve, "b"), undefined);
  assertEquals(reservationOf(undefined, "a/b"), undefined);
});

Deno.test("reserve: the open policy reserves nothing", () => {
  assertEquals(checkReservation(OPEN_POLICY, "model/a", null), null);
  assertEquals(checkReservation(OPEN_POLICY, "model/a", "anyone"), null);
});

Deno.test("reserve: malformed reservations are refused with file, line and key", async () => {
  assertEquals(
    await refusal(`{\n  "reserve": ["model/"]\n}`),
    `${PATH}:2: reserve: expected an object such as { "model/": "trainer", "report.csv": "ci" }`,
  );
  assertEquals(
    await refusal(`{\n  "reserve": {\n    "a*b": "j"\n  }\n}`),
    `${PATH}:3: reserve: "a*b": expected a name, or a prefix ending in / or in one *`,
  );
  assertEquals(
    await refusal(`{ "reserve": { "*": "j" } }`),
    `${PATH}:1: reserve: "*": expected a name, or a prefix ending in / or in one *`,
  );
  assertEquals(
    await refusal(`{ "reserve": { "a": 1 } }`),
    `${PATH}:1: reserve: "a": expected a job id of 1 to 256 bytes without NUL`,
  );
  assertEquals(
    await refusal(`{ "reserve": { "a": "" } }`),
    `${PATH}:1: reserve: "a": expected a job id of 1 to 256 bytes without NUL`,
  );
  assertEquals(
    await refusal(`{ "reserve": { "a\\tb": "j" } }`),
    `${PATH}:1: reserve: "a\tb": object name must not contain control byte 0x09 (at byte 1)`,
  );
  assertEquals(
    await refusal(`{ "reserve": { "a": "j\\n" } }`),
    `${PATH}:1: reserve: "a": job id must not contain control byte 0x0a (at byte 1)`,
  );
  assertEquals(
    await refusal(`{ "reserve": { "${"x".repeat(257)}": "j" } }`),
    `${PATH}:1: reserve: "${"x".repeat(257)}": longer than 256 bytes`,
  );
});

Deno.test("unlistedJobs: deny by default once the policy binds a job, open when it binds none", async () => {
  const peer = { uid: 1000, gid: 1000 };
  // Absent or empty policy: fully open, as in the C tool.
  assertEquals(unlistedJobsRule(OPEN_POLICY), "allow");
  assertEquals(checkJobClaim(OPEN_POLICY, "anything", peer), null);
  assertEquals(unlistedJobsRule(await policyOf("{}")), "allow");
  assertEquals(unlistedJobsRule(await policyOf(RESERVED)), "allow");

  const binds = await policyOf(`{ "jobs": { "trainer": { "uids": [1000] } } }`);
  assertEquals(unlistedJobsRule(binds), "deny");
  assertEquals(checkJobClaim(binds, "trainer", peer), null);
  assertEquals(
    checkJobClaim(binds, "trainer", { uid: 1001, gid: 1001 }),
    PolicyText.jobNotPermitted,
  );
  assertEquals(checkJobClaim(binds, "unlisted", peer), PolicyText.jobNotPermitted);
  assertEquals(checkJobClaim(binds, "unlisted", undefined), PolicyText.jobNotPermitted);
  // No job at all is still governed by requireJob alone.
  assertEquals(checkJobClaim(binds, null, peer), null);

  const open = await policyOf(
    `{ "jobs": { "trainer": { "uids": [1000] } }, "unlistedJobs": "allow" }`,
  );
  assertEquals(checkJobClaim(open, "unlisted", { uid: 1001, gid: 1001 }), null);
  assertEquals(
    checkJobClaim(open, "trainer", { uid: 1001, gid: 1001 }),
    PolicyText.jobNotPermitted,
  );

  // "deny" without any binding: no job id can be claimed, unscoped requests still can.
  const closed = await policyOf(`{ "unlistedJobs": "deny" }`);
  assertEquals(checkJobClaim(closed, "any", peer), PolicyText.jobNotPermitted);
  assertEquals(checkJobClaim(closed, null, peer), null);

  assertEquals(
    await refusal(`{ "unlistedJobs": true }`),
    `${PATH}:1: unlistedJobs: expected "deny" or "allow"`,
  );
});

Deno.test("reserve and unlistedJobs are policy keys: a policy file may hold them", async () => {
  const p = await policyOf(`{ "unlistedJobs": "deny", "reserve": { "a": "j" } }`);
  assertEquals(p.unlistedJobs, "deny");
  assertEquals(p.reserve, [{ pattern: "a", prefix: false, job: "j", source: "a" }]);
});
