/** Pure fair-share decisions (src/core/fair_shares.ts) and the `peerLimits` config key. */

import { assertEquals, rejects } from "../support/assert.ts";
import {
  DEFAULT_PEER_LIMITS,
  shareFor,
  shareOf,
  shareOfBig,
  storeShareProblem,
} from "../../src/core/fair_shares.ts";
import { NO_QUOTAS } from "../../src/core/governance.ts";
import { parseConfig } from "../../src/core/config.ts";
import { defaultBrokerOptions } from "../../src/core/options.ts";

const GLOBAL = {
  maxClients: 128,
  maxWaiters: 1024,
  maxWatchers: 64,
  maxObjects: 1000n,
  maxTotalBytes: 4001n,
};

Deno.test("default shares are 3/4 of each broker-wide limit, at least 1", () => {
  assertEquals([shareOf(128), shareOf(1024), shareOf(1), shareOf(3)], [96, 768, 1, 2]);
  assertEquals([shareOfBig(1000n), shareOfBig(4001n), shareOfBig(1n)], [750n, 3000n, 1n]);
  const u64 = 18446744073709551615n;
  // No limit is not cut to 3/4 of 2^64 (which `usage` would print as a quota).
  assertEquals([shareOfBig(u64), shareOfBig(u64 - 1n)], [u64, (u64 - 1n) / 4n * 3n + 1n]);
});

const GLOBAL_RULES = {
  peerLimits: DEFAULT_PEER_LIMITS,
  quotas: NO_QUOTAS,
  global: GLOBAL,
  exempt: [0],
};

Deno.test("root and the broker's uid are exempt unless quotas.uids names them", () => {
  const rules = {
    peerLimits: DEFAULT_PEER_LIMITS,
    quotas: NO_QUOTAS,
    global: GLOBAL,
    exempt: [0, 1000],
  };
  assertEquals(shareFor(0, rules), null);
  assertEquals(shareFor(1000, rules), null);
  assertEquals(shareFor(1001, rules), {
    connections: 96,
    waits: 768,
    watchers: 48,
    replyBytes: 16 * 1024 * 1024,
    replyFds: 64,
    store: { objects: 750n, bytes: 3000n },
    storeKey: "quotas.perUid",
    metadataBytes: null,
  });
  const named = {
    ...rules,
    quotas: { ...NO_QUOTAS, uids: new Map([[1000, { objects: 5n, bytes: null }]]) },
  };
  assertEquals(shareFor(1000, named), {
    connections: Infinity,
    waits: Infinity,
    watchers: Infinity,
    replyBytes: Infinity,
    replyFds: Infinity,
    store: { objects: 5n, bytes: null },
    storeKey: "quotas.uids",
    metadataBytes: null,
  });
});

Deno.test("configured peerLimits and quotas.perUid replace the default shares", () => {
  const share = shareFor(7, {
    peerLimits: { connections: 3, waits: null, watchers: 2 },
    quotas: { ...NO_QUOTAS, perUid: { objects: null, bytes: 10n } },
    global: GLOBAL,
    exempt: [0],
  });
  assertEquals(share, {
    connections: 3,
    waits: 768,
    watchers: 2,
    replyBytes: 16 * 1024 * 1024,
    replyFds: 64,
    store: { objects: null, bytes: 10n },
    storeKey: "quotas.perUid",
    metadataBytes: null,
  });
  if (share === null) return;
  assertEquals(storeShareProblem(7, share, { objects: 99, bytes: 4, size: 6 }), null);
  assertEquals(
    storeShareProblem(7, share, { objects: 0, bytes: 4, size: 7 }),
    "uid 7 has 4 of 10 bytes (the per-uid limit, quotas.perUid); this put needs 7",
  );
});

Deno.test("config key peerLimits: connections, waits, watchers and unread replies per uid, checked", async () => {
  const { options } = await parseConfig(
    '{ "peerLimits": { "connections": 5, "waits": 6, "watchers": 7 }, "maxWatchers": 9 }',
    "/etc/m.jsonc",
    defaultBrokerOptions(),
  );
  assertEquals(options.peerLimits, {
    connections: 5,
    waits: 6,
    watchers: 7,
    replyBytes: null,
    replyFds: null,
    metadataBytes: null,
  });
  assertEquals(options.maxWatchers, 9);
  const replies = await parseConfig(
    '{ "peerLimits": { "replyBytes": 65536, "replyFds": 2 } }',
    "/etc/m.jsonc",
    defaultBrokerOptions(),
  );
  assertEquals(replies.options.peerLimits, {
    connections: null,
    waits: null,
    watchers: null,
    replyBytes: 65536,
    replyFds: 2,
    metadataBytes: null,
  });
  assertEquals(
    shareFor(7, { ...GLOBAL_RULES, peerLimits: replies.options.peerLimits })?.replyFds,
    2,
  );
  await rejects(
    parseConfig('{ "peerLimits": { "connections": 0 } }', "/etc/m.jsonc", defaultBrokerOptions()),
    {
      message: "/etc/m.jsonc:1: peerLimits: connections: expected an integer from 1 to 2147483647",
    },
  );
  // replyBytes is a byte count like every other one in the config.
  const sized = await parseConfig(
    '{ "peerLimits": { "replyBytes": "4MiB" } }',
    "/etc/m.jsonc",
    defaultBrokerOptions(),
  );
  assertEquals(sized.options.peerLimits.replyBytes, 4 * 1024 * 1024);
  await rejects(
    parseConfig(
      '{ "peerLimits": { "replyBytes": "2GiB" } }',
      "/etc/m.jsonc",
      defaultBrokerOptions(),
    ),
    {
      message: "/etc/m.jsonc:1: peerLimits: replyBytes: expected a byte count from 1 to " +
        '2147483647, such as "16MiB"',
    },
  );
  await rejects(
    parseConfig('{ "peerLimits": { "bytes": 1 } }', "/etc/m.jsonc", defaultBrokerOptions()),
    { message: '/etc/m.jsonc:1: peerLimits: unknown key "bytes"' },
  );
});

Deno.test("metadata share: 3/4 of maxMetadataBytes per non-exempt uid, none for exempt uids", () => {
  const rules = { ...GLOBAL_RULES, global: { ...GLOBAL, maxMetadataBytes: 4001n } };
  assertEquals(shareFor(0, rules), null);
  const share = shareFor(65534, rules);
  assertEquals(share?.metadataBytes, 3000n);
  if (share === null) return;
  // Exactly filling the share fits; one byte more is refused with the per-uid text.
  assertEquals(
    storeShareProblem(65534, share, { objects: 1, bytes: 0, size: 4, metadata: 2000, cost: 1000 }),
    null,
  );
  assertEquals(
    storeShareProblem(65534, share, { objects: 1, bytes: 0, size: 4, metadata: 2000, cost: 1001 }),
    "uid 65534 has 2000 of 3000 metadata bytes (the per-uid limit, peerLimits.metadataBytes); " +
      "this put needs 1001",
  );
  // Without a broker-wide limit there is no share.
  assertEquals(shareFor(65534, GLOBAL_RULES)?.metadataBytes, null);
  // A configured peerLimits.metadataBytes replaces the default share.
  const own = shareFor(65534, {
    ...rules,
    peerLimits: { ...DEFAULT_PEER_LIMITS, metadataBytes: 10n },
  });
  assertEquals(own?.metadataBytes, 10n);
  // A uid named in quotas.uids but exempt (the operator) has no metadata share.
  const named = {
    ...rules,
    exempt: [0, 1000],
    quotas: { ...NO_QUOTAS, uids: new Map([[1000, { objects: 5n, bytes: null }]]) },
  };
  assertEquals(shareFor(1000, named)?.metadataBytes, null);
});

Deno.test("config: maxMetadataBytes and peerLimits.metadataBytes are byte counts, checked", async () => {
  const { options } = await parseConfig(
    '{ "maxMetadataBytes": "64MiB", "peerLimits": { "metadataBytes": 1048576 } }',
    "/etc/m.jsonc",
    defaultBrokerOptions(),
  );
  assertEquals(options.maxMetadataBytes, 64n * 1024n * 1024n);
  assertEquals(options.peerLimits.metadataBytes, 1048576n);
  const plain = await parseConfig(
    '{ "maxMetadataBytes": 1073741824 }',
    "/etc/m.jsonc",
    defaultBrokerOptions(),
  );
  assertEquals(plain.options.maxMetadataBytes, 1n << 30n);
  assertEquals(defaultBrokerOptions().maxMetadataBytes, 1n << 30n);
  for (const bad of ["0", '"1 GB"', '"-1"', "true", "1.5", '"18446744073709551616"']) {
    await rejects(
      parseConfig(`{\n  "maxMetadataBytes": ${bad}\n}`, "/etc/m.jsonc", defaultBrokerOptions()),
      {
        message:
          '/etc/m.jsonc:2: maxMetadataBytes: expected a byte count such as 1073741824 or "1GiB"',
      },
    );
  }
  await rejects(
    parseConfig(
      '{ "peerLimits": { "metadataBytes": "lots" } }',
      "/etc/m.jsonc",
      defaultBrokerOptions(),
    ),
    {
      message:
        '/etc/m.jsonc:1: peerLimits: metadataBytes: expected a byte count such as 805306368 or "768MiB"',
    },
  );
  await rejects(
    parseConfig('{ "maxMetadataByte": 5 }', "/etc/m.jsonc", defaultBrokerOptions()),
    { message: '/etc/m.jsonc:1: maxMetadataByte: unknown key (did you mean "maxMetadataBytes"?)' },
  );
});
