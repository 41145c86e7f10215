// The one KV claim primitive (runtime/infra/kv-claim.ts) that leases and relay
// claims share, against a real nats-server; staleness on a ManualClock.

import { JetStreamApiError } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it, onTestFinished } from "vitest";
import { isCasConflict, KvClaims, ManualClock, openKvWithTimeout } from "../runtime/index.ts";
import { readFileSync } from "node:fs";
import { startNats } from "./helpers/nats-harness.ts";
import { waitFor } from "./helpers/wait.ts";

async function bucket() {
  const nats = await startNats({ onCleanup: onTestFinished });
  const nc = await connect({ servers: nats.url });
  onTestFinished(() => nc.close());
  return new Kvm(nc).create("claims_test");
}

describe("KvClaims", () => {
  it("two contenders never both win: create, renew at the revision written, takeover at the revision seen, revision-checked release", async () => {
    const kv = await bucket();
    const clock = new ManualClock();
    const a = new KvClaims({ kv, staleAfterMs: 3000, clock });
    const b = new KvClaims({ kv, staleAfterMs: 3000, clock });

    const ra = await a.create("k", "a");
    expect(ra).toBeGreaterThan(0);
    expect(await b.create("k", "b")).toBeUndefined();

    const ra2 = await a.renew("k", "a", ra!);
    expect(ra2).toBeGreaterThan(ra!);
    // b saw the first revision: its takeover at that revision loses to a's renewal.
    expect(await b.takeOver("k", "b", ra!)).toBeUndefined();
    // A renewal at a revision someone else has since replaced says so, it does not throw.
    const rb = await b.takeOver("k", "b", ra2!);
    expect(rb).toBeGreaterThan(ra2!);
    expect(await a.renew("k", "a", ra2!)).toBeUndefined();
    // The refusal names the revision the write lost to: the lease keeper reads that one, not "the latest".
    expect(await a.renewOrConflict("k", "a", ra2!)).toEqual({ conflictAt: rb });
    expect(await a.release("k", ra2!)).toBe(false);
    expect((await kv.get("k"))?.string()).toBe("b");

    expect(await b.release("k", rb!)).toBe(true);
    expect((await kv.get("k"))?.operation).toBe("DEL");
    // A deleted key is free for a create again.
    expect(await a.create("k", "a")).toBeGreaterThan(rb!);
  });

  it("gives up a write to a server that does not answer after the timeout it was opened with, not JetStream's default 5 s", async () => {
    const nats = await startNats({ onCleanup: onTestFinished });
    const nc = await connect({ servers: nats.url });
    onTestFinished(() => nc.close());
    await new Kvm(nc).create("claims_timeout");
    const fast = await openKvWithTimeout(nc, "claims_timeout", 400);
    const revision = await fast.put("k", "a");
    const pid = nats.server.pid!;
    // A server that takes the request and never answers: stopped, its socket still open.
    process.kill(pid, "SIGSTOP");
    onTestFinished(() => void process.kill(pid, "SIGCONT"));
    // Stopped for sure before the write (state T in /proc), or the server may still answer it.
    await waitFor(() => (readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.startsWith("T") ? true : undefined), { timeoutMs: 5000, intervalMs: 10, message: "nats-server stopped" });
    const timed = async (write: Promise<unknown>) => {
      const started = performance.now();
      const err = await write.then(
        () => undefined,
        (e: unknown) => e,
      );
      return { err, ms: performance.now() - started };
    };
    // (Kvm.open(bucket, { timeout: 400 }) waited the full 5 s here: its option does not reach writes.)
    const f = await timed(fast.update("k", "b", revision));
    process.kill(pid, "SIGCONT");
    expect(f.err).toBeInstanceOf(Error);
    expect(f.ms).toBeGreaterThanOrEqual(350);
    expect(f.ms).toBeLessThan(1500);
  }, 20_000);

  it("judges staleness on its own monotonic clock from when it saw the revision change, never from the first sight's age", () => {
    const clock = new ManualClock();
    const claims = new KvClaims({ kv: undefined as never, staleAfterMs: 3000, clock });
    // First sight: fresh for a full TTL, however old the entry may be.
    expect(claims.observe("k", 7)).toEqual({ stale: false, ageMs: 0 });
    clock.advance(2999);
    expect(claims.observe("k", 7).stale).toBe(false);
    // A change restarts the age.
    expect(claims.observe("k", 8)).toEqual({ stale: false, ageMs: 0 });
    clock.advance(2999);
    expect(claims.observe("k", 8).stale).toBe(false);
    clock.advance(1);
    expect(claims.observe("k", 8)).toEqual({ stale: true, ageMs: 3000 });
    // No entry: nothing to wait for.
    expect(claims.observe("k", undefined).stale).toBe(true);
    expect(claims.observe("k", 8).stale).toBe(false);
  });

  it("isCasConflict knows both of the server's wrong-last-sequence codes and nothing else", () => {
    const err = (code: number) => new JetStreamApiError({ code: 400, err_code: code, description: "wrong last sequence" });
    expect(isCasConflict(err(10071))).toBe(true);
    expect(isCasConflict(err(10164))).toBe(true);
    expect(isCasConflict(err(10059))).toBe(false);
    expect(isCasConflict(new Error("wrong last sequence"))).toBe(false);
  });
});
