// A camera tile: live video over WHEP while the tile is on screen and the
// camera streams, else its latest snapshot; a badge with the state; the
// detections of the last second drawn as boxes over the picture.
import { useEffect, useRef, useState } from "preact/hooks";
import { snapshotUrl } from "./api.js";
import { html } from "./html.js";
import { BOX_MS, MOVED_MS, store } from "./store.js";
import { watch } from "./whep.js";

/** Whether the element is on screen (`margin` widens the screen, as IntersectionObserver's rootMargin). */
function useInView(ref, margin = "0px") {
  const [inView, setInView] = useState(false);
  useEffect(() => {
    const io = new IntersectionObserver((entries) => setInView(entries.some((e) => e.isIntersecting)), { rootMargin: margin, threshold: 0 });
    io.observe(ref.current);
    return () => io.disconnect();
  }, [margin]);
  return inView;
}

/** Re-renders every `ms` while `on`. */
function useTick(on, ms = 1000) {
  const [, setN] = useState(0);
  useEffect(() => {
    if (!on) return;
    const t = setInterval(() => setN((n) => n + 1), ms);
    return () => clearInterval(t);
  }, [on, ms]);
}

const RETRY_WHEP_MS = 3000;

/** The WHEP session of a tile while `active`: started, retried after a failure, closed when no longer wanted. */
function useWhep(camera, videoRef, active) {
  const [problem, setProblem] = useState(undefined);
  const [attempt, setAttempt] = useState(0);
  useEffect(() => {
    if (!active) return;
    const video = videoRef.current;
    let session;
    let gone = false;
    let retry;
    const again = (why, final = false) => {
      if (gone) return;
      console.warn(`camfleet: WHEP for ${camera}: ${why}`);
      setProblem(why);
      if (!final) retry = setTimeout(() => setAttempt((a) => a + 1), RETRY_WHEP_MS);
    };
    watch(camera, video, again).then(
      (s) => {
        if (gone) return s.close();
        session = s;
        setProblem(undefined);
        store.videos.set(camera, video);
      },
      // A camera that does not publish (409) or has no such video (406) will not by asking again; a new state will.
      (err) => again(err.code ? `${err.code}: ${err.message}` : String(err), err.code === "CONFLICT" || err.code === "UNSUPPORTED_MEDIA"),
    );
    return () => {
      gone = true;
      clearTimeout(retry);
      session?.close();
      if (store.videos.get(camera) === video) store.videos.delete(camera);
    };
  }, [camera, active, attempt]);
  return problem;
}

/** The latest snapshot while the tile is near the screen but not playing: refreshed every 30 s, only while near. */
function useSnapshot(camera, wanted) {
  const [url, setUrl] = useState(undefined);
  useEffect(() => {
    if (!wanted) return;
    let gone = false;
    const load = async () => {
      const next = await snapshotUrl(camera).catch(() => undefined);
      if (gone || next === undefined) return next && URL.revokeObjectURL(next);
      setUrl((old) => {
        if (old) URL.revokeObjectURL(old);
        return next;
      });
    };
    void load();
    const t = setInterval(load, 30_000);
    return () => {
      gone = true;
      clearInterval(t);
    };
  }, [camera, wanted]);
  return url;
}

export function Badge({ cam }) {
  const s = cam.stream;
  const now = Date.now();
  const moving = cam.movedAt !== undefined && now - cam.movedAt < MOVED_MS;
  useTick(cam.state === "ERROR" || moving);
  const retryIn = cam.retryAt !== undefined ? Math.max(0, Math.ceil((cam.retryAt - now) / 1000)) : undefined;
  return html`<div class="badge">
    <span class=${`state state-${cam.state}`}>${cam.state}</span>
    ${s && cam.state === "STREAMING" && html`<span class="size">${s.width}×${s.height}</span><span>${Math.round(s.fps ?? 0)} fps</span>`}
    ${cam.node && html`<span class=${moving ? "node moved" : "node"}>${moving ? `${cam.movedFrom} → ` : ""}${cam.node}${cam.epoch !== undefined ? ` · epoch ${cam.epoch}` : ""}</span>`}
    ${cam.viewers !== undefined && html`<span>${cam.viewers} viewer${cam.viewers === 1 ? "" : "s"}</span>`}
    ${cam.publishing && html`<span class="pub">publishing</span>`}
    ${cam.error && html`<span class="error" role="status" title=${cam.error.detail}><strong class="code">${cam.error.code}</strong> ${cam.error.detail}</span>`}
    ${cam.state === "ERROR" && retryIn !== undefined && html`<span class="countdown">retrying in ${retryIn} s</span>`}
  </div>`;
}

function Boxes({ camera }) {
  const now = Date.now();
  const recent = (store.boxes.get(camera) ?? []).filter((b) => b.at > now - BOX_MS);
  return html`<div class="boxes" aria-hidden="true">
    ${recent.flatMap((b) =>
      b.event.detections.map(
        (d, i) => html`<div key=${`${b.event.id}-${i}`} class="box" style=${{ left: `${d.box.x * 100}%`, top: `${d.box.y * 100}%`, width: `${d.box.w * 100}%`, height: `${d.box.h * 100}%` }}>
          <span>${d.label} ${Math.round(d.score * 100)}%</span>
        </div>`,
      ),
    )}
  </div>`;
}

export function Tile({ cam, big = false }) {
  const ref = useRef(null);
  const videoRef = useRef(null);
  const inView = useInView(ref);
  const near = useInView(ref, "100% 0px");
  const live = inView && cam.state === "STREAMING" && cam.enabled !== false;
  const problem = useWhep(cam.id, videoRef, live);
  const snapshot = useSnapshot(cam.id, near && !live && cam.state === "STREAMING");
  const s = cam.stream;
  // The picture box has the stream's shape, so boxes in 0..1 of the frame are percentages of it.
  const aspect = s?.width && s?.height ? `${s.width} / ${s.height}` : "16 / 9";
  return html`<article ref=${ref} class=${`tile${big ? " big" : ""}`} data-camera=${cam.id} data-state=${cam.state} aria-label=${`camera ${cam.name ?? cam.id}`}>
    <header>
      ${big ? html`<h2>${cam.name ?? cam.id}</h2>` : html`<a href=${`#camera=${encodeURIComponent(cam.id)}`} class="title">${cam.name ?? cam.id}</a>`}
      ${cam.name && html`<span class="muted">${cam.id}</span>`}
    </header>
    <div class="picture" style=${{ aspectRatio: aspect }}>
      <video ref=${videoRef} muted autoplay playsinline class=${live ? "" : "hidden"}></video>
      ${!live && snapshot && html`<img src=${snapshot} alt=${`latest picture of ${cam.id}`} />`}
      ${!live && !snapshot && html`<div class="placeholder">${cam.enabled === false ? "stopped" : cam.state === "STREAMING" ? "" : cam.state.toLowerCase()}</div>`}
      ${live && html`<${Boxes} camera=${cam.id} />`}
      ${live && problem && html`<div class="overlay-msg">${problem}</div>`}
    </div>
    <${Badge} cam=${cam} />
  </article>`;
}
