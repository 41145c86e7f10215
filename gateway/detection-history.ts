import type { DetectionEvent, Scope } from "../subjects/index.ts";
import { subjects } from "../subjects/index.ts";
import type { EventStore, StoredEvent } from "./event-store.ts";

/**
 * Detection history from CAMFLEET_DETECTIONS: one page of the events stored
 * in [since, until] (by the time JetStream stored them), newest or oldest
 * first, for GET /cameras/{id}/detections and GET /detections.
 *
 * `next` is a stream sequence: the page's last event when more follow. A
 * label filter is a look inside each event that JetStream cannot do, so a
 * page with one reads at most SCAN_BUDGET messages; when that budget runs
 * out first, the page may be short (even empty) and `next` is where the scan
 * stopped. Either way, passing `next` as the cursor goes on with nothing
 * skipped and nothing repeated.
 */

export interface HistoryQuery {
  /** Subject scope: a camera, a tenant, a site, or any mix; empty = every camera. */
  scope: Scope;
  /** Only events with a detection of this label. */
  label?: string;
  since?: Date;
  until?: Date;
  limit: number;
  order: "newest" | "oldest";
  /** The `next` of the previous page. */
  cursor?: number;
  /** Messages a labelled page reads at most; default SCAN_BUDGET. */
  scanBudget?: number;
}

export interface HistoryPage {
  events: StoredEvent[];
  next: string | null;
}

/** Messages one labelled page reads at most: a rare label costs bounded work per request, and the client pages on. */
export const SCAN_BUDGET = 20_000;
/** Sequences read per step backwards when a label filter rules out counting. */
const SCAN_CHUNK = 1_000;

export async function detectionHistory(store: EventStore, q: HistoryQuery): Promise<HistoryPage> {
  const filter = subjects.detectionsFilter(q.scope);
  const lo = q.since !== undefined ? await store.firstSeqAtOrAfter("detection", q.since) : 1;
  const hi = q.until !== undefined ? (await store.firstSeqAtOrAfter("detection", new Date(q.until.getTime() + 1))) - 1 : await store.lastSeq("detection");
  const label = q.label;
  if (label !== undefined) return scanLabelled(store, filter, lo, hi, q, (e) => (e.event as DetectionEvent).detections.some((d) => d.label === label));

  const need = q.limit + 1;
  let found: StoredEvent[] = [];
  if (q.order === "oldest") {
    const from = Math.max(lo, (q.cursor ?? 0) + 1);
    await store.readRange("detection", filter, from, hi, (e) => void found.push(e), { max: need });
  } else {
    // JetStream reads forward only: find the latest start s whose range [s, top] holds what is needed, then read it.
    let top = q.cursor !== undefined ? Math.min(hi, q.cursor - 1) : hi;
    while (found.length < need && top >= lo) {
      const want = need - found.length;
      const after = await store.countFrom("detection", filter, top + 1);
      const inRange = async (s: number) => (await store.countFrom("detection", filter, s)) - after;
      let s = lo;
      if ((await inRange(lo)) > want) {
        // Largest s with at least `want` in [s, top]: inRange(l) >= want > inRange(r).
        let l = lo;
        let r = top + 1;
        while (r - l > 1) {
          const mid = Math.floor((l + r) / 2);
          if ((await inRange(mid)) >= want) l = mid;
          else r = mid;
        }
        s = l;
      }
      const batch: StoredEvent[] = [];
      await store.readRange("detection", filter, s, top, (e) => void batch.push(e));
      found = found.concat(batch.reverse().slice(0, want));
      // Events stored meanwhile beyond `top` can make the counts too high: then go on below s.
      if (s <= lo) break;
      top = s - 1;
    }
  }
  return pageOf(found, q.limit, null);
}

/** A page filtered by content: read in order (or in chunks backwards), keep the matches, stop at the page or the budget. */
async function scanLabelled(store: EventStore, filter: string, lo: number, hi: number, q: HistoryQuery, matches: (e: StoredEvent) => boolean): Promise<HistoryPage> {
  const need = q.limit + 1;
  const budget = q.scanBudget ?? SCAN_BUDGET;
  const found: StoredEvent[] = [];
  let scanned = 0;
  if (q.order === "oldest") {
    const from = Math.max(lo, (q.cursor ?? 0) + 1);
    const { lastSeq } = await store.readRange("detection", filter, from, hi, (e) => {
      scanned++;
      if (matches(e)) found.push(e);
      return found.length < need && scanned < budget;
    });
    // Out of budget before the page filled: go on after the last message read.
    return pageOf(found, q.limit, found.length < need && scanned >= budget && lastSeq < hi ? lastSeq : null);
  }
  let top = q.cursor !== undefined ? Math.min(hi, q.cursor - 1) : hi;
  while (found.length < need && top >= lo && scanned < budget) {
    const s = Math.max(lo, top - Math.min(SCAN_CHUNK, budget - scanned) + 1);
    const batch: StoredEvent[] = [];
    await store.readRange("detection", filter, s, top, (e) => {
      scanned++;
      if (matches(e)) batch.push(e);
    });
    found.push(...batch.reverse());
    top = s - 1;
  }
  // Out of budget: the next page reads below `top + 1`, the lowest sequence scanned.
  return pageOf(found, q.limit, found.length < need && top >= lo ? top + 1 : null);
}

function pageOf(found: StoredEvent[], limit: number, resumeAt: number | null): HistoryPage {
  const events = found.slice(0, limit);
  const last = events[events.length - 1];
  if (found.length > limit && last !== undefined) return { events, next: String(last.seq) };
  return { events, next: resumeAt !== null ? String(resumeAt) : null };
}
