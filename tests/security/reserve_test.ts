/**
 * Issue 10, point 6: name protection that cannot be raced. A policy reserves names and prefixes
 * for a job; another uid (65534, through setpriv) can publish under them neither before the
 * owner's first publish nor in the gap of a rotation (every version dropped), and job ids the
 * policy does not list cannot be claimed. `--protect-names` alone leaves that gap open, shown
 * first. Real broker process, real second user; skipped where a second user is impossible.
 */

import { assertEquals } from "../support/assert.ts";
import { type BrokerProcess, enc, tempDir } from "../support/harness.ts";
import { putRequest } from "../support/wire.ts";
import { Agent, brokerForOthers, NOBODY, SKIP } from "../support/peer_agent.ts";
import { Client } from "../../src/client.ts";
import { PolicyText } from "../../src/core/policy.ts";

async function brokerWithPolicy(dir: string, policy: string): Promise<BrokerProcess> {
  const file = `${dir}/policy.jsonc`;
  Deno.writeTextFileSync(file, policy);
  return await brokerForOthers(dir, ["--policy", file]);
}

const JOBS = `"jobs": { "trainer": { "uids": [0] }, "intruder": { "uids": [${NOBODY}] } }`;

Deno.test({
  name: "--protect-names alone: another uid's job takes a name in its rotation gap",
  ignore: SKIP,
  fn: async () => {
    using dir = tempDir();
    await using broker = await brokerWithPolicy(
      dir.path,
      `{ ${JOBS}, "protectNames": true }`,
    );
    await using agent = Agent.start(dir.path, broker.socket);
    await using trainer = new Client({ socket: broker.socket, jobId: "trainer", keepAlive: false });
    const v1 = await trainer.put(enc("v1"), { name: "model/weights" });
    const squat = enc("squat");
    // While a version exists the name is protected...
    assertEquals(
      await agent.request(putRequest("model/weights", squat, { job: "intruder" }), squat),
      {
        status: 4,
        text: PolicyText.nameOwned,
      },
    );
    // ...but in the gap between dropping the old version and publishing the next, it is not.
    await trainer.drop(v1.id);
    const r = await agent.request(putRequest("model/weights", squat, { job: "intruder" }), squat);
    assertEquals(r.status, 0, JSON.stringify(r));
    // The squatter now holds the name; its owner is the one refused.
    assertEquals(
      await trainer.put(enc("v2"), { name: "model/weights" }).then(() => "ok", (e) => e.message),
      `broker error: ${PolicyText.nameOwned}`,
    );
  },
});

Deno.test({
  name:
    "policy reserve: another uid cannot publish a reserved name before its owner's first publish nor in a rotation gap",
  ignore: SKIP,
  fn: async () => {
    using dir = tempDir();
    await using broker = await brokerWithPolicy(
      dir.path,
      `{
  ${JOBS},
  "reserve": { "model/": "trainer", "report.csv": "trainer" },
}`,
    );
    await using agent = Agent.start(dir.path, broker.socket);
    const modelRefusal = {
      status: 4,
      text: 'object name is reserved for job trainer (policy reserve "model/")',
    };
    const squat = enc("squat");
    const put = (name: string, job?: string) =>
      agent.request(putRequest(name, squat, job === undefined ? {} : { job }), squat);

    // Before the owner ever published: reserved for its own job, unscoped or not.
    assertEquals(await put("model/weights", "intruder"), modelRefusal);
    assertEquals(await put("model/weights"), modelRefusal);
    assertEquals(await put("report.csv", "intruder"), {
      status: 4,
      text: 'object name is reserved for job trainer (policy reserve "report.csv")',
    });
    // The owner's job cannot be claimed by this uid, nor can a job the policy does not list.
    assertEquals(await put("model/weights", "trainer"), {
      status: 4,
      text: PolicyText.jobNotPermitted,
    });
    assertEquals(await put("squatter/x", "squatter"), {
      status: 4,
      text: PolicyText.jobNotPermitted,
    });
    // Names outside the reservations stay open to the other uid's own job.
    assertEquals(await put("intruder/x", "intruder"), { status: 0, text: "" });
    assertEquals(await put("report.csv.bak", "intruder"), { status: 0, text: "" });

    await using trainer = new Client({ socket: broker.socket, jobId: "trainer", keepAlive: false });
    const v1 = await trainer.put(enc("v1"), { name: "model/weights" });
    assertEquals(await put("model/weights", "intruder"), modelRefusal);
    // The rotation gap: no version of the name exists, the reservation still holds.
    await trainer.drop(v1.id);
    assertEquals((await trainer.list()).filter((e) => e.name.startsWith("model/")), []);
    assertEquals(await put("model/weights", "intruder"), modelRefusal);
    assertEquals(await put("model/weights"), modelRefusal);
    const v2 = await trainer.put(enc("v2"), { name: "model/weights" });
    await using reader = new Client({ socket: broker.socket, jobId: null, keepAlive: false });
    using got = await reader.get({ name: "model/weights" });
    assertEquals([got.id, got.text()], [v2.id, "v2"]);
    assertEquals(
      (await reader.list()).map((e) => [e.name, e.owner]).sort(),
      [["intruder/x", "intruder"], ["model/weights", "trainer"], ["report.csv.bak", "intruder"]],
    );
  },
});
