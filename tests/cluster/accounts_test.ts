/**
 * Issue 14, point 6: the README's NATS account and permissions, run for real. nats-server starts
 * with exactly `contrib/nats/memfdbus-accounts.conf` (the file the README shows; its key
 * placeholders replaced by keys made here), two brokers connect with their own nkeys, a publish
 * on A is served on B, and the same key cannot read or write another bucket.
 *
 * @module
 */

import { assertEquals, ok as assert } from "../support/assert.ts";
import { connect, nkeyAuthenticator } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { createUser } from "@nats-io/nkeys";
import { BrokerProcess, cli, enc, ROOT } from "../support/harness.ts";
import { clusterTest, freePorts, NatsNode } from "../support/cluster.ts";
import { waitFor } from "../support/wait.ts";

Deno.env.delete("MEMFDBUS_JOB_ID");

const CONF = `${ROOT}/contrib/nats/memfdbus-accounts.conf`;

interface Key {
  readonly public: string;
  readonly seedFile: string;
  readonly seed: Uint8Array;
}

function makeKey(dir: string, who: string): Key {
  const kp = createUser();
  const seed = kp.getSeed();
  const seedFile = `${dir}/${who}.nk`;
  Deno.writeFileSync(seedFile, seed, { mode: 0o600 });
  return { public: kp.getPublicKey(), seedFile, seed };
}

/** The outcome of `fn` as a string: "ok" or the error's message (the first line). */
async function outcome(fn: () => Promise<unknown>): Promise<string> {
  try {
    await fn();
    return "ok";
  } catch (e) {
    return (e instanceof Error ? e.message : String(e)).split("\n")[0] ?? "";
  }
}

Deno.test("cluster: the README shows contrib/nats/memfdbus-accounts.conf verbatim", async () => {
  const readme = await Deno.readTextFile(`${ROOT}/README.md`);
  const conf = await Deno.readTextFile(CONF);
  assert(readme.includes("```\n" + conf + "```\n"), "README lacks the accounts file verbatim");
});

clusterTest(
  "cluster: brokers confined by the README's NATS permissions work, and their keys reach no other bucket",
  async (dir) => {
    const d = dir.path;
    const admin = makeKey(d, "admin");
    const hostA = makeKey(d, "host-a");
    const hostB = makeKey(d, "host-b");
    const accounts = (await Deno.readTextFile(CONF))
      .replace("ADMIN_NKEY", admin.public)
      .replace("HOST_A_NKEY", hostA.public)
      .replace("HOST_B_NKEY", hostB.public);
    assert(!/_NKEY\b/.test(accounts.replace(/^#.*$/gm, "")), "a placeholder is left");
    await Deno.mkdir(`${d}/nats`);
    await Deno.writeTextFile(`${d}/nats/memfdbus-accounts.conf`, accounts);
    const [port] = freePorts(1);
    await using nats = await NatsNode.fromConfig(
      `${d}/nats`,
      `listen: "127.0.0.1:${port}"\njetstream { store_dir: "${d}/nats/js" }\n` +
        `include memfdbus-accounts.conf\n`,
      port ?? 0,
    );

    // Another application's bucket in the same account, made by the administrator.
    const nca = await connect({ servers: nats.url, authenticator: nkeyAuthenticator(admin.seed) });
    try {
      const other = await new Kvm(jetstream(nca)).create("other-app");
      await other.put("secret", enc("not for brokers"));
    } finally {
      await nca.close();
    }

    const brokerConf = (host: string, key: Key): string => {
      const file = `${d}/${host}.jsonc`;
      Deno.writeTextFileSync(
        file,
        JSON.stringify({ cluster: { servers: [nats.url], hostId: host, nkey: key.seedFile } }),
      );
      return file;
    };
    await using a = await BrokerProcess.start(d, ["--config", brokerConf("acc-a", hostA)]);
    await using b = await BrokerProcess.start(d, ["--config", brokerConf("acc-b", hostB)]);
    const bytes = enc("published on A under its own key");
    await Deno.writeFile(`${d}/f`, bytes);
    const put = await cli(["put", `${d}/f`, "--name", "acc/x", "--socket", a.socket]);
    assertEquals([put.code, put.stderr], [0, ""]);
    await waitFor(async () => {
      const g = await cli(["get", "--name", "acc/x", `${d}/out`, "--socket", b.socket]);
      return g.code === 0;
    }, { what: "B to serve A's publish through the confined keys" });
    assertEquals(await Deno.readFile(`${d}/out`), bytes);
    assert(!a.stderr.includes("Permissions Violation"), a.stderr);
    assert(!b.stderr.includes("Permissions Violation"), b.stderr);

    // The same key, used directly: its own bucket yes, another bucket no.
    const nc = await connect({
      servers: nats.url,
      authenticator: nkeyAuthenticator(hostA.seed),
      timeout: 5000,
    });
    try {
      const js = jetstream(nc, { timeout: 2000 });
      const kvm = new Kvm(js);
      const own = await kvm.open("memfdbus-names");
      assertEquals(
        await outcome(() =>
          own.keys().then(async (it) => {
            for await (const _ of it) { /* drain */ }
          })
        ),
        "ok",
      );
      const other = await kvm.open("other-app");
      const read = await outcome(() => other.get("secret"));
      const write = await outcome(() => other.put("secret", enc("overwritten")));
      const create = await outcome(() => kvm.create("brokers-own-bucket"));
      for (const [what, r] of [["read", read], ["write", write], ["create", create]]) {
        assert(r !== "ok", `${what} of another bucket was allowed`);
        assert(/permission/i.test(r ?? ""), `${what}: ${r}`);
      }
    } finally {
      await nc.close();
    }
  },
);
