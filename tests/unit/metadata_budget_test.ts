/**
 * The metadata budget as pure accounting: what each object is charged (`metadataCost`), the
 * store's total and limit, the governor's per-uid charges and its broker-wide refusal, release
 * on removal and rebuilding from restored objects.
 */
import { assertEquals, ok } from "../support/assert.ts";
import {
  metadataCost,
  type NewObject,
  OBJECT_OVERHEAD_BYTES,
  Store,
} from "../../src/core/store.ts";
import { type GovernanceRules, Governor, GovText } from "../../src/core/governance.ts";
import { openRules } from "../support/governance.ts";

const U64_MAX = 18446744073709551615n;
const DIGEST = "sha256:" + "a".repeat(64);

let nextFd = 100;
function obj(name: string, extra: Partial<NewObject> = {}): NewObject {
  return {
    size: 4,
    fd: nextFd++,
    digest: DIGEST,
    name,
    owner: null,
    allowed: null,
    createdNs: 0n,
    ...extra,
  };
}

function rules(maxMetadataBytes: bigint, extra: Partial<GovernanceRules> = {}): GovernanceRules {
  return openRules({ maxMetadataBytes, ...extra });
}

Deno.test("metadataCost is name, owner and allowed job bytes plus the measured overhead", () => {
  assertEquals(OBJECT_OVERHEAD_BYTES, 768);
  assertEquals(metadataCost({ name: "abc", owner: null, allowed: null }), 3 + 768);
  assertEquals(metadataCost({ name: "abc", owner: "trainer", allowed: "ci" }), 3 + 7 + 2 + 768);
  // Binary strings: a 64 KiB name costs its 65536 bytes.
  assertEquals(metadataCost({ name: "n".repeat(65536), owner: null, allowed: null }), 66304);
});

Deno.test("the store sums metadata charges and releases them on removal", () => {
  const store = new Store({ maxObjects: U64_MAX, maxTotalBytes: U64_MAX });
  assertEquals([store.metadataBytes, store.maxMetadataBytes], [0, null]);
  const a = store.add(obj("a", { owner: "job" }));
  const b = store.add(obj("bb", { fd: a.fd })); // a shared content: names are not shared
  assertEquals(store.metadataBytes, 1 + 3 + 768 + 2 + 768);
  assertEquals(store.exceedsMetadata(1 << 30), false); // no limit
  store.remove(a);
  assertEquals(store.metadataBytes, 2 + 768);
  store.remove(b);
  assertEquals(store.metadataBytes, 0);
  // Removing twice charges nothing back twice.
  store.remove(b);
  assertEquals(store.metadataBytes, 0);
});

Deno.test("exceedsQuota counts --max-metadata-bytes: a charge exactly filling the room fits", () => {
  const max = BigInt(2 * (1 + 768));
  const store = new Store({ maxObjects: U64_MAX, maxTotalBytes: U64_MAX, maxMetadataBytes: max });
  assertEquals(store.maxMetadataBytes, max);
  store.add(obj("a"));
  assertEquals(store.exceedsQuota(4, 1 + 768), false);
  assertEquals(store.exceedsQuota(4, 2 + 768), true);
  assertEquals(store.exceedsQuota(4), false); // without a charge: the old objects/bytes check
  assertEquals(store.exceedsMetadata(2 + 768, 1 + 768), false); // room freed by retention
});

Deno.test("the governor refuses past maxMetadataBytes with the C broker's text; retention frees room", () => {
  const max = BigInt(3 * (1 + 768));
  const store = new Store({ maxObjects: U64_MAX, maxTotalBytes: U64_MAX, maxMetadataBytes: max });
  const gov = new Governor(rules(max), store);
  const put = (name: string) => ({ name, size: 4, digest: DIGEST, owner: null, uid: 65534 });
  for (const name of ["a", "b", "c"]) {
    const d = gov.admitPut(put(name));
    ok(d.ok);
    gov.added(store.add(obj(name, { uid: 65534 })));
  }
  assertEquals(gov.uidMetadata(65534), 3 * 769);
  const refused = gov.admitPut(put("d"));
  assertEquals(refused, { ok: false, limit: "broker", text: GovText.brokerQuota });
  assertEquals(GovText.brokerQuota, "broker object quota exceeded");
  // With retention keeping one version of "a", a new "a" replaces the old one: it fits.
  const kept = new Governor(rules(max, { keepVersions: 1 }), store);
  const again = kept.admitPut(put("a"));
  ok(again.ok && again.release.length === 1);
  // A longer name than the one released does not fit.
  const store2 = new Store({ maxObjects: U64_MAX, maxTotalBytes: U64_MAX });
  const gov2 = new Governor(rules(max, { keepVersions: 1 }), store2);
  for (const name of ["a", "b", "c"]) gov2.added(store2.add(obj(name)));
  assertEquals(gov2.admitPut(put("a")).ok, true);
  assertEquals(gov2.admitPut(put("bb")).ok, false);
});

Deno.test("per-uid metadata charges follow adds and removals and are rebuilt from restored objects", () => {
  const store = new Store({ maxObjects: U64_MAX, maxTotalBytes: U64_MAX });
  const gov = new Governor(rules(U64_MAX), store);
  const x = store.add(obj("x".repeat(100), { uid: 1001, owner: "j" }));
  gov.added(x);
  const y = store.add(obj("y", { uid: 1002 }));
  gov.added(y);
  assertEquals([gov.uidMetadata(1001), gov.uidMetadata(1002)], [100 + 1 + 768, 1 + 768]);
  // A governor built over a restored store (shadow recovery, takeover) starts from its objects.
  const restored = new Store({ maxObjects: U64_MAX, maxTotalBytes: U64_MAX });
  restored.restore(x, 10);
  restored.restore(y, 10);
  const rebuilt = new Governor(rules(U64_MAX), restored);
  assertEquals([rebuilt.uidMetadata(1001), rebuilt.uidMetadata(1002)], [869, 769]);
  assertEquals(restored.metadataBytes, store.metadataBytes);
  store.remove(x);
  gov.removed(x);
  assertEquals([gov.uidMetadata(1001), gov.uidMetadata(1002)], [0, 769]);
  assertEquals(store.metadataBytes, 769);
});
