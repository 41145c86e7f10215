// Add or edit a camera: POST /cameras, or PUT /cameras/{id} with If-Match (the
// revision it was read at). The API names a bad field in its message
// ("invalid CameraSpec: ai.max_fps: …"); the message is shown at that field.
import { useEffect, useRef, useState } from "preact/hooks";
import { call } from "./api.js";
import { html } from "./html.js";
import { refreshCameras } from "./store.js";

const EMPTY = { id: "", url: "", name: "", tenant: "", site: "", solutions: "", ai: false, ai_fps: "", publish: "on-demand", enabled: true };

/** Spec path (as the API names it) → form field. */
const FIELD_OF = { id: "id", url: "url", name: "name", tenant: "tenant", site: "site", solutions: "solutions", "ai.enabled": "ai", "ai.max_fps": "ai_fps", publish: "publish", enabled: "enabled" };

function fieldErrors(err) {
  const out = {};
  const m = /^invalid [\w ]+: (.*)$/s.exec(err.message ?? "");
  if (m) {
    for (const part of m[1].split("; ")) {
      const i = part.indexOf(": ");
      const path = i > 0 ? part.slice(0, i) : "";
      const key = FIELD_OF[path] ?? FIELD_OF[path.split(".")[0]] ?? Object.entries(FIELD_OF).find(([p]) => path.startsWith(`${p}.`))?.[1];
      if (key) out[key] = out[key] ? `${out[key]}; ${part.slice(i + 2)}` : part.slice(i + 2);
    }
  }
  if (err.code === "CONFLICT" && /exists/.test(err.message)) out.id = err.message;
  if (/^camera id /.test(err.message ?? "")) out.id = err.message;
  return out;
}

function toSpec(v, editing) {
  const spec = {
    url: v.url.trim(),
    enabled: v.enabled,
    publish: v.publish,
    solutions: v.solutions.split(",").map((s) => s.trim()).filter(Boolean),
    ai: { enabled: v.ai },
  };
  if (!editing) spec.id = v.id.trim();
  if (v.name.trim()) spec.name = v.name.trim();
  if (v.tenant.trim()) spec.tenant = v.tenant.trim();
  if (v.site.trim()) spec.site = v.site.trim();
  // A number the API checks (>0, ≤60); text that is not one is sent as is so its message comes back at the field.
  if (v.ai_fps.trim()) spec.ai.max_fps = Number.isNaN(Number(v.ai_fps)) ? v.ai_fps : Number(v.ai_fps);
  return spec;
}

function fromSpec(spec) {
  return {
    id: spec.id,
    url: spec.url,
    name: spec.name ?? "",
    tenant: spec.tenant ?? "",
    site: spec.site ?? "",
    solutions: (spec.solutions ?? []).join(", "),
    ai: spec.ai?.enabled ?? false,
    ai_fps: spec.ai?.max_fps !== undefined ? String(spec.ai.max_fps) : "",
    publish: spec.publish ?? "on-demand",
    enabled: spec.enabled ?? true,
    // Fields the form does not show go back as they were.
    rest: spec,
  };
}

/** The add/edit dialog. `editId` names the camera to edit; undefined adds one. */
export function CameraForm({ editId, onClose }) {
  const dialog = useRef(null);
  const [v, setV] = useState(EMPTY);
  const [etag, setEtag] = useState(undefined);
  const [errors, setErrors] = useState({});
  const [general, setGeneral] = useState(undefined);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    dialog.current.showModal();
    if (editId === undefined) return;
    call("GET", `/cameras/${encodeURIComponent(editId)}`).then(
      ({ data, res }) => {
        setV(fromSpec(data));
        setEtag(res.headers.get("etag") ?? undefined);
      },
      (err) => setGeneral(`${err.code}: ${err.message}`),
    );
  }, [editId]);

  const set = (k) => (e) => setV({ ...v, [k]: e.target.type === "checkbox" ? e.target.checked : e.target.value });

  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setErrors({});
    setGeneral(undefined);
    try {
      const editing = editId !== undefined;
      const spec = toSpec(v, editing);
      if (editing) {
        const { rest } = v;
        const body = { ...rest, ...spec, ai: { ...rest.ai, ...spec.ai } };
        delete body.id;
        if (!v.ai_fps.trim()) delete body.ai.max_fps;
        if (!v.name.trim()) delete body.name;
        await call("PUT", `/cameras/${encodeURIComponent(editId)}`, body, etag ? { "if-match": etag } : {});
      } else {
        await call("POST", "/cameras", spec);
      }
      await refreshCameras();
      onClose();
    } catch (err) {
      const fields = fieldErrors(err);
      setErrors(fields);
      if (Object.keys(fields).length === 0) setGeneral(`${err.code}: ${err.message}`);
      // The first field in trouble gets the focus, so a keyboard user lands on it.
      const first = Object.keys(FIELD_OF).map((p) => FIELD_OF[p]).find((k) => fields[k]);
      if (first) dialog.current.querySelector(`[name=${first}]`)?.focus();
    } finally {
      setBusy(false);
    }
  };

  const field = (k, label, input) => html`<div class=${`field${errors[k] ? " invalid" : ""}`}>
    <label for=${`f-${k}`}>${label}</label>
    ${input}
    ${errors[k] && html`<p class="field-error" id=${`e-${k}`} role="alert">${errors[k]}</p>`}
  </div>`;
  const text = (k, extra = {}) => html`<input id=${`f-${k}`} name=${k} value=${v[k]} onInput=${set(k)} aria-invalid=${errors[k] ? "true" : "false"} aria-describedby=${errors[k] ? `e-${k}` : undefined} ...${extra} />`;

  return html`<dialog ref=${dialog} class="form-dialog" onClose=${onClose} aria-labelledby="form-title">
    <form onSubmit=${submit} novalidate>
      <h2 id="form-title">${editId ? `Edit ${editId}` : "Add a camera"}</h2>
      ${general && html`<p class="form-error" role="alert">${general}</p>`}
      ${field("id", "Id", text("id", { disabled: editId !== undefined, placeholder: "front-door", autofocus: editId === undefined }))}
      ${field("url", "Stream URL", text("url", { placeholder: "rtsp://user:pass@host/stream" }))}
      ${field("name", "Name", text("name"))}
      <div class="row">
        ${field("tenant", "Tenant", text("tenant", { placeholder: "default" }))}
        ${field("site", "Site", text("site", { placeholder: "default" }))}
      </div>
      ${field("solutions", "Solutions (comma-separated)", text("solutions", { placeholder: "motion" }))}
      <div class="row">
        ${field("ai", "Analyse frames", html`<input type="checkbox" id="f-ai" name="ai" checked=${v.ai} onChange=${set("ai")} />`)}
        ${field("ai_fps", "AI rate (frames/s)", text("ai_fps", { inputmode: "decimal", placeholder: "1" }))}
      </div>
      <div class="row">
        ${field("publish", "Publish (WHIP)", html`<select id="f-publish" name="publish" value=${v.publish} onChange=${set("publish")}>
          <option value="on-demand">on demand</option><option value="always">always</option><option value="off">off</option>
        </select>`)}
        ${field("enabled", "Running", html`<input type="checkbox" id="f-enabled" name="enabled" checked=${v.enabled} onChange=${set("enabled")} />`)}
      </div>
      <div class="actions">
        <button type="submit" disabled=${busy}>${editId ? "Save" : "Add camera"}</button>
        <button type="button" onClick=${() => dialog.current.close()}>Cancel</button>
      </div>
    </form>
  </dialog>`;
}
