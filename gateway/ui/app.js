// The camfleet dashboard: camera grid, fleet view, detections, camera
// management and detail, all through this one gateway. Routes: `#` the
// grid, `#camera=<id>` one camera.
import { render } from "preact";
import { useEffect, useReducer, useState } from "preact/hooks";
import { auth, onAuthChange, setToken } from "./api.js";
import { Detail } from "./detail.js";
import { Feed, FleetView } from "./fleet.js";
import { CameraForm } from "./form.js";
import { html } from "./html.js";
import { refreshCameras, refreshNodes, start, store, subscribe } from "./store.js";
import { Tile } from "./tile.js";

function useStore() {
  const [, bump] = useReducer((n) => n + 1, 0);
  useEffect(() => subscribe(bump), []);
  useEffect(() => onAuthChange(bump), []);
}

function useHash() {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  const m = /^#camera=(.+)$/.exec(hash);
  return m ? decodeURIComponent(m[1]) : undefined;
}

function TokenPrompt() {
  const [value, setValue] = useState("");
  const submit = (e) => {
    e.preventDefault();
    if (!value) return;
    setToken(value);
    void refreshCameras();
    void refreshNodes();
  };
  return html`<div class="token-prompt" role="dialog" aria-labelledby="token-title">
    <form onSubmit=${submit}>
      <h2 id="token-title">This gateway needs its API token</h2>
      <p>It is CAMFLEET_API_TOKEN. The page keeps it for this tab only and sends it as a bearer token with each request.</p>
      ${auth.token !== undefined && html`<p class="form-error" role="alert">The token given was refused.</p>`}
      <label for="token">API token</label>
      <input id="token" name="token" type="password" autocomplete="current-password" value=${value} onInput=${(e) => setValue(e.target.value)} autofocus />
      <button type="submit">Open the dashboard</button>
    </form>
  </div>`;
}

function Grid() {
  const cams = [...store.cameras.values()].sort((a, b) => a.id.localeCompare(b.id));
  if (store.listError && cams.length === 0) return html`<p class="form-error">Cameras could not be listed: ${store.listError.code}: ${store.listError.message}</p>`;
  if (cams.length === 0) return html`<p class="muted">No camera yet. Add one.</p>`;
  return html`<div class="grid">${cams.map((c) => html`<${Tile} key=${c.id} cam=${c} />`)}</div>`;
}

function App() {
  useStore();
  const detail = useHash();
  const [form, setForm] = useState(undefined); // undefined: closed; {editId?}
  if (auth.needed) return html`<${TokenPrompt} />`;
  const counts = { cams: store.cameras.size, streaming: [...store.cameras.values()].filter((c) => c.state === "STREAMING").length };
  return html`<div class="layout">
    <header class="top">
      <h1><a href="#">camfleet</a></h1>
      <span class="muted">${counts.streaming} of ${counts.cams} cameras streaming · ${store.nodes.length} node${store.nodes.length === 1 ? "" : "s"} · events ${store.feed}</span>
      <button class="add" onClick=${() => setForm({})}>Add camera</button>
    </header>
    <main>${detail !== undefined ? html`<${Detail} id=${detail} onEdit=${(id) => setForm({ editId: id })} />` : html`<${Grid} />`}</main>
    <aside>
      <${FleetView} />
      ${detail === undefined && html`<${Feed} />`}
    </aside>
    ${form && html`<${CameraForm} editId=${form.editId} onClose=${() => setForm(undefined)} />`}
  </div>`;
}

start();
render(html`<${App} />`, document.getElementById("app"));
