// The fleet: nodes with capacity, load and draining flag, the cameras each
// runs (a camera that just changed node is marked), drain from here; and the
// feed of recent detections.
import { useState } from "preact/hooks";
import { api } from "./api.js";
import { html } from "./html.js";
import { MOVED_MS, refreshCameras, refreshNodes, store } from "./store.js";

const mib = (b) => (b === null || b === undefined ? "–" : `${Math.round(b / 1048576)} MiB`);

function DrainButton({ node }) {
  const [asking, setAsking] = useState(false);
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState(undefined);
  if (node.draining) return html`<span class="flag">draining</span>`;
  const drain = async () => {
    setBusy(true);
    try {
      const r = await api.post(`/nodes/${encodeURIComponent(node.node)}/drain`);
      setResult(`released ${r.released}`);
    } catch (err) {
      setResult(`${err.code}: ${err.message}`);
    } finally {
      setBusy(false);
      setAsking(false);
      void refreshNodes();
      void refreshCameras();
    }
  };
  // Two steps instead of confirm(): the question is part of the page, reachable by keyboard like the rest.
  if (asking) {
    return html`<span class="confirm" role="group" aria-label=${`drain ${node.node}?`}>
      Hand every camera of ${node.node} over?
      <button onClick=${drain} disabled=${busy} class="danger">Drain ${node.node}</button>
      <button onClick=${() => setAsking(false)}>Cancel</button>
    </span>`;
  }
  return html`<span><button onClick=${() => setAsking(true)} aria-label=${`drain node ${node.node}`}>Drain</button>${result && html` <span class="muted">${result}</span>`}</span>`;
}

export function FleetView() {
  const byNode = new Map();
  for (const cam of store.cameras.values()) {
    const key = cam.node && cam.state !== "STOPPED" ? cam.node : "";
    if (!byNode.has(key)) byNode.set(key, []);
    byNode.get(key).push(cam);
  }
  const now = Date.now();
  const camList = (cams) => html`<ul class="cams">
    ${cams.sort((a, b) => a.id.localeCompare(b.id)).map((c) => {
      const moved = c.movedAt !== undefined && now - c.movedAt < MOVED_MS;
      return html`<li key=${c.id} class=${moved ? "moved" : ""} data-camera=${c.id}>
        <a href=${`#camera=${encodeURIComponent(c.id)}`}><span class=${`dot state-${c.state}`}></span>${c.id}</a>
        ${moved && html` <span class="muted">from ${c.movedFrom}</span>`}
      </li>`;
    })}
  </ul>`;
  return html`<section class="fleet" aria-labelledby="fleet-title">
    <h2 id="fleet-title">Nodes</h2>
    ${store.nodes.length === 0 && html`<p class="muted">No node is up.</p>`}
    ${store.nodes.map((n) => {
      const load = n.capacity > 0 ? Math.min(100, Math.round((n.cameras / n.capacity) * 100)) : 0;
      return html`<div class=${`node-card${n.draining ? " draining" : ""}`} key=${n.node} data-node=${n.node}>
        <div class="node-head">
          <strong>${n.node}</strong>
          <${DrainButton} node=${n} />
        </div>
        <div class="load" title=${`${n.cameras} of ${n.capacity} cameras`}>
          <div class="bar"><div style=${{ width: `${load}%` }}></div></div>
          <span><span class="count">${n.cameras}</span> / ${n.capacity} cameras · CPU ${n.cpu_percent === null || n.cpu_percent === undefined ? "–" : `${Math.round(n.cpu_percent)}%`} · ${mib(n.memory_bytes)}</span>
        </div>
        ${camList(byNode.get(n.node) ?? [])}
      </div>`;
    })}
    ${(byNode.get("") ?? []).length > 0 && html`<div class="node-card unplaced"><div class="node-head"><strong>not running</strong></div>${camList(byNode.get(""))}</div>`}
  </section>`;
}

export function DetectionRow({ item }) {
  const e = item.event;
  return html`<li class="det">
    ${item.thumb ? html`<img src=${item.thumb} alt="" width="64" />` : html`<span class="nothumb"></span>`}
    <span>
      <a href=${`#camera=${encodeURIComponent(e.camera)}`}>${e.camera}</a>
      <span class="muted"> ${new Date(e.ts).toLocaleTimeString()}</span><br />
      ${e.detections.map((d) => `${d.label} ${Math.round(d.score * 100)}%`).join(", ")}
    </span>
  </li>`;
}

export function Feed({ camera }) {
  const items = store.detections.filter((d) => camera === undefined || d.event.camera === camera).slice(0, 12);
  return html`<section class="feed" aria-labelledby="feed-title">
    <h2 id="feed-title">Recent detections</h2>
    ${items.length === 0 ? html`<p class="muted">None yet.</p>` : html`<ul>${items.map((i) => html`<${DetectionRow} key=${i.event.id} item=${i} />`)}</ul>`}
  </section>`;
}
