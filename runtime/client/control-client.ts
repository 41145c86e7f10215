// The client side of the control request/reply API (docs/contract.md, "Control over NATS
// request/reply"), for the CLI, the gateway and tests.
//
// Every method validates its input before anything is sent and reports a bad
// id or spec as a rejected promise (INVALID_ARGUMENT), never a synchronous throw.
//
// Every failure leaves here as a CamfleetError: the reply's own error, or the
// boundary's (no reply in time, nobody serving the subject, a reply that does
// not parse, a closed connection).
//
// Requests go through one wildcard inbox subscription per client instead of
// nc.request(): measured on loopback (bench/control-rpc.ts), nc.request() adds
// ~40 µs at p50 over a plain publish/subscribe ping-pong (a RequestError and a
// TimeoutError built per call for their stacks, a timer promise and a
// Promise.race), while this muxed publish costs what the ping-pong does and
// the whole client, zod parse included, beats nc.request() by ~20 µs. It keeps
// the core client's no-responders detection: a v3 client connects with
// `no_responders`, so the server answers a request nobody subscribes to with an
// empty 503 status message on the reply subject, at once.
//
// A user whose NATS permissions forbid a request gets PERMISSION_DENIED
// naming the subject at once, not a timeout: the server reports a denied
// publish only asynchronously (-ERR 'Permissions Violation for Publish to
// "<subject>"', a status event of the connection), so the client watches the
// status feed and fails the requests still waiting on that subject. A denied
// reply subscription fails every waiting request the same way.

import {
  ClosedConnectionError,
  createInbox,
  DrainingConnectionError,
  headers,
  PermissionViolationError,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
  type Status,
  type Subscription,
} from "@nats-io/transport-node";
import {
  assertId,
  CAMERAS_LIST_MAX_LIMIT,
  CamfleetError,
  CONTENT_TYPE_HEADER,
  control,
  describeIssues,
  ensureCamfleetError,
  EXPECTED_REVISION_HEADER,
  parseOrThrow,
  SNAPSHOT_CONTENT_TYPE,
  subjects,
  type CameraSpecInput,
  type CameraSpecPatch,
  type CameraStatus,
  type ControlName,
  type ControlReply,
  type ControlRequest,
} from "../../subjects/index.ts";

export interface ControlClientOptions {
  /** How long a request waits for its reply before failing with UNAVAILABLE, in ms. Default 5000. */
  timeoutMs?: number;
  /** Prefix of the reply inbox, for accounts whose permissions allow only another one. Default `_INBOX`. */
  inboxPrefix?: string;
}

/** The fields of a successful reply, without `ok`. */
export type ControlResult<N extends ControlName> = Omit<Extract<ControlReply<N>, { ok: true }>, "ok">;

interface Pending {
  subject: string;
  /** performance.now() at which the request fails. */
  deadline: number;
  settle: (msg: Msg | CamfleetError) => void;
}

const DEFAULT_TIMEOUT_MS = 5000;
const EMPTY = "{}";

export class ControlClient {
  readonly #nc: NatsConnection;
  readonly #timeoutMs: number;
  readonly #inboxPrefix: string | undefined;
  /** `<inbox>.` while the reply subscription is open. */
  #inbox: string | undefined;
  #sub: Subscription | undefined;
  #seq = 0;
  /**
   * By reply token. Every request waits the same timeoutMs, so insertion
   * order is deadline order: one timer, armed for the oldest, serves all.
   */
  readonly #pending = new Map<string, Pending>();
  #timer: NodeJS.Timeout | undefined;
  /** The connection's status feed while requests can be denied (stopped by close()). */
  #statusFeed: { stop(): void } | undefined;

  constructor(nc: NatsConnection, opts: ControlClientOptions = {}) {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
      throw new CamfleetError("INVALID_ARGUMENT", `ControlClientOptions.timeoutMs must be a positive number of ms, got ${timeoutMs}`);
    }
    this.#nc = nc;
    this.#timeoutMs = timeoutMs;
    this.#inboxPrefix = opts.inboxPrefix;
  }

  /**
   * Creates or replaces a camera. With `expectedRevision` the write is
   * revision-checked: PRECONDITION_FAILED unless the stored spec is still at
   * that revision; 0 creates only (CONFLICT if the camera exists).
   */
  async putCamera(spec: CameraSpecInput, opts: WriteOptions = {}): Promise<ControlResult<"camerasPut">> {
    parseOrThrow(control.camerasPut.request, spec, "camera spec");
    // The spec as given, not with the schema's defaults: what it leaves out gets the answering node's (AI_MAX_FPS, …).
    return this.#call("camerasPut", subjects.ctl.camerasPut, JSON.stringify(spec), this.#noNode, revisionHeader(opts));
  }

  async getCamera(id: string): Promise<ControlResult<"camerasGet">> {
    const body: ControlRequest<"camerasGet"> = { id: assertId("camera", id) };
    return this.#call("camerasGet", subjects.ctl.camerasGet, JSON.stringify(body), this.#noNode);
  }

  /** One page of cameras in id order; pass its `next` as `after` for the following page (none: the last page). */
  async listCameras(request: ControlRequest<"camerasList"> = {}): Promise<ControlResult<"camerasList">> {
    const body = parseOrThrow(control.camerasList.request, request, "camera filter");
    return this.#call("camerasList", subjects.ctl.camerasList, JSON.stringify(body), this.#noNode);
  }

  /**
   * Every camera matching the filter, page by page. A camera added or removed
   * while the pages are read may or may not be in the result; none appears twice.
   */
  async listAllCameras(filter: { tenant?: string; site?: string } = {}): Promise<ControlResult<"camerasList">["cameras"]> {
    const all: ControlResult<"camerasList">["cameras"] = [];
    let after: string | undefined;
    do {
      const page = await this.listCameras({ ...filter, limit: CAMERAS_LIST_MAX_LIMIT, ...(after !== undefined ? { after } : {}) });
      all.push(...page.cameras);
      after = page.next;
    } while (after !== undefined);
    return all;
  }

  /** Deletes a camera; with `expectedRevision`, only if it is still at that revision (else PRECONDITION_FAILED). */
  async deleteCamera(id: string, opts: WriteOptions = {}): Promise<void> {
    const body: ControlRequest<"camerasDelete"> = { id: assertId("camera", id) };
    await this.#call("camerasDelete", subjects.ctl.camerasDelete, JSON.stringify(body), this.#noNode, revisionHeader(opts));
  }

  /** Sets `enabled`; `patch` is merged over the stored spec (a new camera needs at least `url`). */
  async startCamera(id: string, patch: CameraSpecPatch = {}): Promise<ControlResult<"cameraStart">> {
    const subject = subjects.ctl.cameraStart(id);
    const body = parseOrThrow(control.cameraStart.request, patch, "camera patch");
    return this.#call("cameraStart", subject, JSON.stringify(body), this.#noNode);
  }

  /** Clears `enabled`. */
  async stopCamera(id: string): Promise<ControlResult<"cameraStop">> {
    return this.#call("cameraStop", subjects.ctl.cameraStop(id), EMPTY, this.#noNode);
  }

  /** Answered by the owner node only: NOT_FOUND when no node runs the camera. */
  async cameraStatus(id: string): Promise<CameraStatus> {
    return this.#call("cameraStatus", subjects.ctl.cameraStatus(id), EMPTY, () =>
      new CamfleetError("NOT_FOUND", `camera ${id} is not running on any node`),
    );
  }

  /**
   * The camera's latest frame as a JPEG, `width` pixels wide if given; answered
   * by the owner node only: NOT_FOUND when no node runs the camera.
   */
  async cameraSnapshot(id: string, width?: number): Promise<Buffer> {
    const subject = subjects.ctl.cameraSnapshot(id);
    const body = parseOrThrow(control.cameraSnapshot.request, width === undefined ? {} : { width }, "snapshot request");
    const msg = await this.#request(subject, JSON.stringify(body));
    if (msg.data.length === 0 && msg.headers?.code === 503) throw new CamfleetError("NOT_FOUND", `camera ${id} is not running on any node`);
    // A success is the JPEG itself, marked by its header; anything else is the JSON failure.
    if (msg.headers?.get(CONTENT_TYPE_HEADER) === SNAPSHOT_CONTENT_TYPE) return Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.byteLength);
    let json: unknown;
    try {
      json = JSON.parse(msg.string());
    } catch (err) {
      throw new CamfleetError("INTERNAL", `malformed reply on ${subject}: neither a JPEG nor JSON`, { cause: err });
    }
    const parsed = control.cameraSnapshot.reply.safeParse(json);
    if (!parsed.success) throw new CamfleetError("INTERNAL", `malformed reply on ${subject}: ${describeIssues(parsed.error)}`, { cause: parsed.error });
    throw new CamfleetError(parsed.data.error.code, parsed.data.error.message);
  }

  async listNodes(): Promise<ControlResult<"nodesList">> {
    return this.#call("nodesList", subjects.ctl.nodesList, EMPTY, this.#noNode);
  }

  /** Makes `node` hand over all its cameras and claim no more. */
  async drainNode(node: string): Promise<{ released: number }> {
    return this.#call("nodeDrain", subjects.ctl.nodeDrain(node), EMPTY, () => new CamfleetError("NOT_FOUND", `no live node ${node}`));
  }

  /** Closes the reply subscription; requests still waiting fail with UNAVAILABLE. The connection stays open. */
  close(): void {
    this.#statusFeed?.stop();
    this.#statusFeed = undefined;
    this.#closeInbox(new CamfleetError("UNAVAILABLE", "control client closed"));
  }

  /** Fails the waiting requests on a subject the server says this user may not publish to. */
  #watchPermissions(): void {
    if (this.#statusFeed !== undefined) return;
    // The v3 client's status() is a QueuedIterator; its stop() also unregisters it from the connection.
    const feed = this.#nc.status() as AsyncIterable<Status> & { stop?: () => void };
    this.#statusFeed = { stop: () => feed.stop?.() };
    void (async () => {
      for await (const s of feed) {
        if (s.type !== "error" || !(s.error instanceof PermissionViolationError) || s.error.operation !== "publish") continue;
        const subject = s.error.subject;
        for (const [token, p] of this.#pending) {
          if (p.subject !== subject) continue;
          this.#pending.delete(token);
          p.settle(permissionDenied("publish to", subject, s.error));
        }
      }
    })();
  }

  /** No responders on a queue-group subject: no node is up at all. */
  readonly #noNode = (subject: string) => new CamfleetError("UNAVAILABLE", `no camfleet node is serving ${subject}`);

  async #call<N extends ControlName>(
    name: N,
    subject: string,
    body: string,
    noResponders: (subject: string) => CamfleetError,
    hdrs?: MsgHdrs,
  ): Promise<ControlResult<N>> {
    const msg = await this.#request(subject, body, hdrs);
    if (msg.data.length === 0 && msg.headers?.code === 503) throw noResponders(subject);

    let json: unknown;
    try {
      json = JSON.parse(msg.string());
    } catch (err) {
      throw new CamfleetError("INTERNAL", `malformed reply on ${subject}: not JSON`, { cause: err });
    }
    const parsed = control[name].reply.safeParse(json);
    if (!parsed.success) {
      throw new CamfleetError("INTERNAL", `malformed reply on ${subject}: ${describeIssues(parsed.error)}`, { cause: parsed.error });
    }
    const reply = parsed.data as ControlReply<N>;
    if (!reply.ok) throw new CamfleetError(reply.error.code, reply.error.message);
    const { ok: _ok, ...result } = reply;
    return result as ControlResult<N>;
  }

  /** Publishes with a reply subject on our inbox and resolves with the reply (which may be a 503 status). */
  #request(subject: string, body: string, hdrs?: MsgHdrs): Promise<Msg> {
    return new Promise<Msg>((resolve, reject) => {
      let token: string | undefined;
      try {
        const inbox = this.#openInbox();
        this.#watchPermissions();
        token = (this.#seq++).toString(36);
        this.#pending.set(token, {
          subject,
          deadline: performance.now() + this.#timeoutMs,
          settle: (m) => (m instanceof CamfleetError ? reject(m) : resolve(m)),
        });
        this.#arm();
        this.#nc.publish(subject, body, { reply: inbox + token, ...(hdrs !== undefined ? { headers: hdrs } : {}) });
      } catch (err) {
        if (token !== undefined) this.#pending.delete(token);
        reject(boundaryError(err, subject));
      }
    });
  }

  #openInbox(): string {
    if (this.#inbox !== undefined) return this.#inbox;
    const inbox = `${createInbox(this.#inboxPrefix)}.`;
    const sub = this.#nc.subscribe(`${inbox}*`, {
      callback: (err, msg) => {
        if (err instanceof PermissionViolationError) return this.#closeInbox(permissionDenied("subscribe to", err.subject, err));
        if (err) return this.#closeInbox(new CamfleetError("UNAVAILABLE", `control reply subscription failed: ${err.message}`, { cause: err }));
        const token = msg.subject.slice(inbox.length);
        const p = this.#pending.get(token);
        if (p === undefined) return; // late reply to a request that already timed out
        this.#pending.delete(token);
        p.settle(msg);
      },
    });
    this.#inbox = inbox;
    this.#sub = sub;
    // The connection closed (or the server dropped the subscription): nothing will answer.
    void sub.closed.then(() => {
      if (this.#sub === sub) this.#closeInbox(new CamfleetError("UNAVAILABLE", "NATS connection closed"));
    });
    return inbox;
  }

  #closeInbox(reason: CamfleetError): void {
    const sub = this.#sub;
    this.#sub = undefined;
    this.#inbox = undefined;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.settle(reason);
    if (sub !== undefined && !sub.isClosed()) sub.unsubscribe();
  }

  /** Arms the one timer for the oldest pending request, if it is not armed. */
  #arm(): void {
    if (this.#timer !== undefined) return;
    const oldest = this.#pending.values().next();
    if (oldest.done) return;
    this.#timer = setTimeout(() => this.#expire(), Math.max(0, oldest.value.deadline - performance.now()));
    // A waiting request alone must not keep a process alive; the open connection does.
    this.#timer.unref();
  }

  #expire(): void {
    this.#timer = undefined;
    const now = performance.now();
    for (const [token, p] of this.#pending) {
      if (p.deadline > now) break;
      this.#pending.delete(token);
      p.settle(new CamfleetError("UNAVAILABLE", `no reply from camfleet within ${this.#timeoutMs} ms on ${p.subject}`));
    }
    this.#arm();
  }
}

export interface WriteOptions {
  /** The KV revision the camera's spec must still have (an HTTP If-Match); 0: the camera must not exist. */
  expectedRevision?: number;
}

function revisionHeader(opts: WriteOptions): MsgHdrs | undefined {
  if (opts.expectedRevision === undefined) return undefined;
  if (!Number.isSafeInteger(opts.expectedRevision) || opts.expectedRevision < 0) {
    throw new CamfleetError("INVALID_ARGUMENT", `expectedRevision must be a whole number of 0 or more, got ${opts.expectedRevision}`);
  }
  const h = headers();
  h.set(EXPECTED_REVISION_HEADER, String(opts.expectedRevision));
  return h;
}

/** A failure to send: the connection is closed or draining, or something unexpected. */
/** The server's permissions violation as PERMISSION_DENIED, naming what was denied. */
function permissionDenied(what: "publish to" | "subscribe to", subject: string, cause: Error): CamfleetError {
  return new CamfleetError("PERMISSION_DENIED", `NATS does not allow this user to ${what} ${subject} (permissions violation); see deploy/nats/ for the permissions of each role`, { cause });
}

function boundaryError(err: unknown, subject: string): CamfleetError {
  if (err instanceof ClosedConnectionError || err instanceof DrainingConnectionError) {
    return new CamfleetError("UNAVAILABLE", `cannot send on ${subject}: NATS connection ${err instanceof ClosedConnectionError ? "closed" : "draining"}`, {
      cause: err,
    });
  }
  return ensureCamfleetError(err);
}
