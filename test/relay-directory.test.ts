// The relay directory (gateway/relay-directory.ts) against a real nats-server:
// a claim survives a renewal of ours that landed unseen, and is given up only
// when another gateway holds it.

import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it, onTestFinished } from "vitest";
import { RelayDirectory } from "../gateway/relay-directory.ts";
import { ensureJetStream, silentLogger } from "../runtime/index.ts";
import { BUCKETS, kvKeys, RelaySchema } from "../subjects/index.ts";
import { startNats } from "./helpers/nats-harness.ts";

describe("relay directory", () => {
  it("re-reads after a failed renewal: keeps a claim that is still ours, gives up one another gateway holds", async () => {
    const nats = await startNats({ onCleanup: onTestFinished });
    const nc = await connect({ servers: nats.url });
    onTestFinished(() => nc.close());
    await ensureJetStream(nc);
    const kv = await new Kvm(nc).open(BUCKETS.relays);
    const dir = new RelayDirectory({ kv, gateway: "g1", url: () => "http://127.0.0.1:1", logger: silentLogger(), describe: () => ({ publishing: true, viewers: 1 }) });
    onTestFinished(() => dir.stop());
    const key = kvKeys.relay("cam");

    expect(await dir.acquire("cam")).toEqual({ local: true });
    // A renewal of ours that timed out on our side but landed: the entry moved on to a revision we never saw.
    const ours = await kv.get(key);
    await kv.update(key, ours!.string(), ours!.revision);
    await dir.renewAll();
    expect(dir.holds("cam")).toBe(true);
    const after = await kv.get(key);
    expect(RelaySchema.parse(after!.json()).gateway).toBe("g1");
    // The next round renews from the revision it found.
    await dir.renewAll();
    expect((await kv.get(key))!.revision).toBeGreaterThan(after!.revision);
    expect(dir.holds("cam")).toBe(true);

    // Another gateway took it over: now it is given up.
    const theirs = { ...RelaySchema.parse((await kv.get(key))!.json()), gateway: "g2", url: "http://127.0.0.1:2", claimed_ts: Date.now() };
    await kv.put(key, JSON.stringify(theirs));
    await dir.renewAll();
    expect(dir.holds("cam")).toBe(false);
    expect(RelaySchema.parse((await kv.get(key))!.json()).gateway).toBe("g2");
  });
});
