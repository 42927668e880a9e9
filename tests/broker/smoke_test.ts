import { assertEquals } from "../support/assert.ts";
import { BrokerProcess, cli, enc, tempDir } from "../support/harness.ts";

Deno.test("a broker subprocess publishes and returns a file through the CLI", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  Deno.writeFileSync(`${dir.path}/in.bin`, enc("payload"));
  const put = await cli(["put", `${dir.path}/in.bin`, "--socket", broker.socket]);
  assertEquals([put.code, put.stdout, put.stderr], [0, "1\n", ""]);
  const get = await cli(["get", "1", "-", "--socket", broker.socket]);
  assertEquals([get.code, get.stdout], [0, "payload"]);
  assertEquals(broker.lines[0], `memfdbus broker listening on ${broker.socket}`);
  const audit = await broker.waitAudit(2);
  assertEquals(audit.map((r) => [r.op, r.result]), [["put", "ok"], ["get", "ok"]]);
  const status = await broker.stop();
  assertEquals(status.code, 0);
});
