// One camera: a larger live view, its controls, the timeline of its states in
// the last hour (GET /cameras/{id}/status/history) and its detection history
// (GET /cameras/{id}/detections, paged with `next`).
import { useEffect, useState } from "preact/hooks";
import { api } from "./api.js";
import { html } from "./html.js";
import { refreshCameras, store } from "./store.js";
import { DetectionRow, Feed } from "./fleet.js";
import { Tile } from "./tile.js";

const HOUR = 3600_000;

function Timeline({ camera, version }) {
  const [hist, setHist] = useState(undefined);
  const [error, setError] = useState(undefined);
  useEffect(() => {
    api.get(`/cameras/${encodeURIComponent(camera)}/status/history?since=1h`).then(setHist, (e) => setError(`${e.code}: ${e.message}`));
  }, [camera, version]);
  if (error) return html`<p class="form-error">${error}</p>`;
  if (!hist) return html`<p class="muted">Loading…</p>`;
  const now = Date.now();
  const start = Math.max(hist.since_ts, now - HOUR);
  const segs = hist.events.map((e, i) => {
    const from = Math.max(start, e.ts);
    const to = i + 1 < hist.events.length ? hist.events[i + 1].ts : now;
    return { e, from, to };
  });
  return html`<div>
    <div class="timeline" role="img" aria-label=${`states of ${camera} in the last hour`}>
      ${segs.map((s) => html`<div class=${`seg state-${s.e.state}`} style=${{ left: `${((s.from - start) / (now - start)) * 100}%`, width: `${Math.max(0.3, ((s.to - s.from) / (now - start)) * 100)}%` }} title=${`${s.e.state} from ${new Date(s.from).toLocaleTimeString()}`}></div>`)}
    </div>
    <div class="timeline-axis"><span>${new Date(start).toLocaleTimeString()}</span><span>now</span></div>
    <ol class="changes">
      ${[...hist.events].reverse().slice(0, 30).map((e) => html`<li key=${`${e.ts}-${e.state}`}>
        <span class="muted">${new Date(e.ts).toLocaleTimeString()}</span> <span class=${`state state-${e.state}`}>${e.state}</span> on ${e.node} (epoch ${e.epoch})${e.error ? ` · ${e.error.code}: ${e.error.detail}` : ""}
      </li>`)}
    </ol>
    ${hist.events.length === 0 && html`<p class="muted">No state change in the last hour.</p>`}
  </div>`;
}

function DetectionHistory({ camera }) {
  const [pages, setPages] = useState([]);
  const [next, setNext] = useState(undefined);
  const [error, setError] = useState(undefined);
  const load = async (cursor) => {
    try {
      const page = await api.get(`/cameras/${encodeURIComponent(camera)}/detections?limit=20${cursor ? `&cursor=${cursor}` : ""}`);
      setPages((p) => (cursor ? [...p, ...page.detections] : page.detections));
      setNext(page.next ?? undefined);
    } catch (e) {
      setError(`${e.code}: ${e.message}`);
    }
  };
  useEffect(() => {
    void load(undefined);
  }, [camera]);
  return html`<section aria-labelledby="hist-title">
    <h3 id="hist-title">Detection history</h3>
    ${error && html`<p class="form-error">${error}</p>`}
    ${pages.length === 0 && !error ? html`<p class="muted">None stored.</p>` : html`<ul class="history">${pages.map((e) => html`<${DetectionRow} key=${e.id} item=${{ event: e }} />`)}</ul>`}
    ${next && html`<button onClick=${() => load(next)}>Older</button>`}
  </section>`;
}

export function Detail({ id, onEdit }) {
  const cam = store.cameras.get(id);
  const [msg, setMsg] = useState(undefined);
  const [confirmDelete, setConfirmDelete] = useState(false);
  useEffect(() => {
    const esc = (e) => e.key === "Escape" && !document.querySelector("dialog[open]") && (location.hash = "");
    addEventListener("keydown", esc);
    return () => removeEventListener("keydown", esc);
  }, []);
  if (!cam) return html`<section class="detail"><p>No camera ${id}. <a href="#">Back to all cameras</a></p></section>`;
  const act = async (what, fn) => {
    setMsg(undefined);
    try {
      await fn();
      await refreshCameras();
    } catch (e) {
      setMsg(`${what}: ${e.code}: ${e.message}`);
    }
  };
  const path = `/cameras/${encodeURIComponent(id)}`;
  return html`<section class="detail" aria-label=${`camera ${id}`}>
    <p><a href="#">← All cameras</a></p>
    <div class="detail-main">
      <${Tile} cam=${cam} big=${true} />
      <div class="detail-side">
        <dl>
          <dt>URL</dt><dd class="url">${cam.url}</dd>
          <dt>Tenant / site</dt><dd>${cam.tenant ?? "default"} / ${cam.site ?? "default"}</dd>
          <dt>Solutions</dt><dd>${cam.solutions?.length ? cam.solutions.join(", ") : "none"}</dd>
        </dl>
        <div class="actions">
          ${cam.enabled === false
            ? html`<button onClick=${() => act("start", () => api.patch(path, { enabled: true }))}>Start</button>`
            : html`<button onClick=${() => act("stop", () => api.patch(path, { enabled: false }))}>Stop</button>`}
          <button onClick=${() => onEdit(id)}>Edit</button>
          ${confirmDelete
            ? html`<button class="danger" onClick=${() => act("delete", async () => { await api.del(path); location.hash = ""; })}>Delete ${id} for good</button><button onClick=${() => setConfirmDelete(false)}>Cancel</button>`
            : html`<button onClick=${() => setConfirmDelete(true)}>Delete</button>`}
        </div>
        ${msg && html`<p class="form-error" role="alert">${msg}</p>`}
      </div>
    </div>
    <section aria-labelledby="tl-title">
      <h3 id="tl-title">States, last hour</h3>
      <${Timeline} camera=${id} version=${`${cam.state}-${cam.epoch}`} />
    </section>
    <${Feed} camera=${id} />
    <${DetectionHistory} camera=${id} />
  </section>`;
}
