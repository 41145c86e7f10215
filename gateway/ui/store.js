// What the page knows about the fleet: cameras (from GET /cameras, kept
// current by status events), nodes (GET /system/stats), recent detections.
// Components read it and re-render on change (at most every 100 ms).
import { api, openEvents } from "./api.js";

export const store = {
  /** id → camera: {id, name, url, enabled, tenant, site, solutions, state, node, epoch, stream, viewers, publishing, error, retryAt, movedFrom, movedAt} */
  cameras: new Map(),
  nodes: [],
  cluster: undefined,
  /** The fleet's newest detections first: {event, at, thumb?}. */
  detections: [],
  /** camera → detection events of the last second, drawn over the video. */
  boxes: new Map(),
  /** camera → <video> of its tile while it plays (for thumbnails). */
  videos: new Map(),
  feed: "connecting",
  /** Why the camera list could not be read, if it could not. */
  listError: undefined,
};

const FEED_SIZE = 50;
/** Boxes stay this long after their event arrived (they fade out in CSS over the same time). */
export const BOX_MS = 1000;
/** A camera that changed node is marked as moving for this long. */
export const MOVED_MS = 8000;

const listeners = new Set();
let scheduled = false;
export function subscribe(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}
export function changed() {
  if (scheduled) return;
  scheduled = true;
  setTimeout(() => {
    scheduled = false;
    for (const fn of listeners) fn();
  }, 100);
}

function cameraOf(id) {
  let cam = store.cameras.get(id);
  if (cam === undefined) {
    cam = { id, state: "STOPPED", enabled: true, solutions: [] };
    store.cameras.set(id, cam);
  }
  return cam;
}

function moveTo(cam, node) {
  if (node === cam.node) return;
  if (cam.node && node) {
    cam.movedFrom = cam.node;
    cam.movedAt = Date.now();
  }
  cam.node = node;
}

/** Status events are newer than a list read that raced with them: the list's state counts only for a camera silent this long. */
const EVENT_FRESH_MS = 10_000;

export async function refreshCameras() {
  try {
    const { cameras } = await api.get("/cameras");
    store.listError = undefined;
    const seen = new Set();
    for (const c of cameras) {
      seen.add(c.camera_id);
      const cam = cameraOf(c.camera_id);
      Object.assign(cam, { name: c.name ?? undefined, url: c.stream_url, enabled: c.enabled, tenant: c.tenant, site: c.site, solutions: c.solutions });
      if (!(cam.statusAt > Date.now() - EVENT_FRESH_MS) || !c.enabled) {
        cam.state = c.state;
        moveTo(cam, c.node ?? undefined);
      }
    }
    for (const id of store.cameras.keys()) if (!seen.has(id)) store.cameras.delete(id);
  } catch (err) {
    store.listError = err;
  }
  changed();
}

export async function refreshNodes() {
  try {
    const stats = await api.get("/system/stats");
    store.nodes = stats.nodes;
    store.cluster = stats.cluster;
  } catch {
    // No node up (503): the fleet view says so from the empty list.
    store.nodes = [];
  }
  changed();
}

function onStatus(ev) {
  const cam = cameraOf(ev.camera);
  moveTo(cam, ev.node);
  const before = cam.error;
  Object.assign(cam, {
    state: ev.state,
    epoch: ev.epoch,
    tenant: ev.tenant,
    site: ev.site,
    stream: ev.stream,
    viewers: ev.viewers,
    publishing: ev.publishing,
    error: ev.error,
    statusAt: Date.now(),
  });
  // The countdown runs on this browser's clock from when the event arrived; a periodic repeat of the same attempt keeps it.
  if (ev.error?.retry_in_ms !== undefined && (before?.attempt !== ev.error.attempt || cam.retryAt === undefined)) {
    cam.retryAt = Date.now() + ev.error.retry_in_ms;
  } else if (ev.error === undefined) {
    cam.retryAt = undefined;
  }
  changed();
}

/** A small JPEG of the tile's current picture: free when the camera is on screen, nothing otherwise. */
function thumbnailOf(camera) {
  const video = store.videos.get(camera);
  if (!video || video.videoWidth === 0) return undefined;
  const canvas = document.createElement("canvas");
  canvas.width = 96;
  canvas.height = Math.round((96 * video.videoHeight) / video.videoWidth);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  return canvas.toDataURL("image/jpeg", 0.6);
}

function onDetection(ev) {
  const now = Date.now();
  store.detections.unshift({ event: ev, at: now, thumb: thumbnailOf(ev.camera) });
  store.detections.length = Math.min(store.detections.length, FEED_SIZE);
  // Events replayed from before the page opened go to the feed only: boxes belong to the picture they were found in.
  if (ev.ts > now - 3000) {
    const list = (store.boxes.get(ev.camera) ?? []).filter((b) => b.at > now - BOX_MS);
    list.push({ event: ev, at: now });
    store.boxes.set(ev.camera, list);
    setTimeout(changed, BOX_MS + 50);
  }
  changed();
}

let started = false;
export function start() {
  if (started) return;
  started = true;
  void refreshCameras();
  void refreshNodes();
  setInterval(refreshCameras, 5000);
  setInterval(refreshNodes, 3000);
  openEvents({
    since: "6s",
    onEvent: (type, ev) => (type === "status" ? onStatus(ev) : onDetection(ev)),
    onState: (s) => {
      store.feed = s;
      changed();
    },
  });
}
