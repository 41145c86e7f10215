import type { FastifyInstance, FastifyReply } from "fastify";
import { assertId, CamfleetError, http as httpBodies, parseOrThrow, PUBLISHER_EPOCH_HEADER, PUBLISHER_NODE_HEADER } from "../../subjects/index.ts";
import type { GatewayCore, PublisherIdentity } from "../core.ts";
import type { SessionKind } from "../relay.ts";

/**
 * Media routes (docs/contract.md, "HTTP gateway" and "Media"):
 *   POST /whip/{id}, POST /whep/{id}     application/sdp offer → 201, Location, answer
 *   DELETE /whip/{id}/{session}, DELETE /whep/{id}/{session}
 *   POST /cameras/{id}/webrtc/offer      JSON {sdp, type: "offer"} → {sdp, type: "answer", location}
 *   GET /webrtc/{id}/urls, GET /webrtc/stats[?id=]
 * A gateway that does not hold the camera's relay answers WHIP and WHEP with
 * a 307 to the gateway that does (see relay-directory.ts).
 */
/** The publisher a WHIP POST names (a node, under a lease epoch), or none. */
function publisherOf(headers: Record<string, string | string[] | undefined>): PublisherIdentity {
  const node = headers[PUBLISHER_NODE_HEADER.toLowerCase()];
  const epoch = headers[PUBLISHER_EPOCH_HEADER.toLowerCase()];
  if (node === undefined && epoch === undefined) return {};
  if (typeof node !== "string" || typeof epoch !== "string" || !/^\d{1,15}$/.test(epoch)) {
    throw new CamfleetError("INVALID_ARGUMENT", `headers ${PUBLISHER_NODE_HEADER} and ${PUBLISHER_EPOCH_HEADER}: give both, a node id and a lease epoch (a whole number)`);
  }
  return { node: assertId("node", node), epoch: Number(epoch) };
}

export function mediaRoutes(app: FastifyInstance, core: GatewayCore): void {
  const sdpBody = (body: unknown): string => {
    if (typeof body !== "string" || body === "") throw new CamfleetError("INVALID_ARGUMENT", "the body must be an SDP offer with Content-Type: application/sdp");
    return body;
  };

  const redirect = (reply: FastifyReply, url: string) => reply.code(307).header("location", url).header("cache-control", "no-store").send();

  for (const kind of ["whip", "whep"] as const satisfies SessionKind[]) {
    app.post<{ Params: { id: string } }>(`/${kind}/:id`, async (req, reply) => {
      const camera = assertId("camera", req.params.id);
      if (req.headers["content-type"]?.split(";")[0]?.trim().toLowerCase() !== "application/sdp") {
        throw new CamfleetError("INVALID_ARGUMENT", "Content-Type must be application/sdp");
      }
      const offer = sdpBody(req.body);
      const outcome = await core.open(kind, camera, offer, "sdp", kind === "whip" ? publisherOf(req.headers) : {});
      if ("redirect" in outcome) return redirect(reply, outcome.redirect);
      return reply
        .code(201)
        .header("content-type", "application/sdp")
        .header("location", outcome.location)
        .header("cache-control", "no-store")
        .send(outcome.answer);
    });

    app.delete<{ Params: { id: string; session: string } }>(`/${kind}/:id/:session`, async (req, reply) => {
      const camera = assertId("camera", req.params.id);
      if (!(await core.relay.end(camera, kind, req.params.session))) {
        throw new CamfleetError("NOT_FOUND", `no ${kind.toUpperCase()} session ${req.params.session.slice(0, 64)} of camera ${camera} on this gateway`);
      }
      return reply.code(200).send();
    });

    // Trickle ICE and ICE restarts are not supported: every offer carries all its candidates.
    app.patch(`/${kind}/:id/:session`, async (_req, reply) =>
      reply.code(405).header("allow", "DELETE").send({ error: { code: "INVALID_ARGUMENT", message: "trickle ICE (PATCH) is not supported; send every candidate in the offer" } }),
    );
  }

  app.post<{ Params: { id: string } }>("/cameras/:id/webrtc/offer", async (req, reply) => {
    const camera = assertId("camera", req.params.id);
    const { sdp } = parseOrThrow(httpBodies.offer, req.body, "offer");
    const outcome = await core.open("whep", camera, sdp, "offer");
    if ("redirect" in outcome) return redirect(reply, outcome.redirect);
    return reply.code(200).header("cache-control", "no-store").send({ sdp: outcome.answer, type: "answer", location: outcome.location });
  });

  app.get<{ Params: { id: string } }>("/webrtc/:id/urls", async (req) => {
    const camera = assertId("camera", req.params.id);
    await core.cameraSpec(camera);
    // The single worker's MediaMTX paths: a MediaMTX that camfleet publishes to (MEDIAMTX_WHIP) serves the camera as camera_<id>.
    const { mediamtxHls, mediamtxRtsp } = core.config;
    return {
      camera_id: camera,
      webrtc: `${core.publicUrl}/whep/${camera}`,
      hls: mediamtxHls !== undefined ? `${mediamtxHls}/camera_${camera}/index.m3u8` : null,
      rtsp: mediamtxRtsp !== undefined ? `${mediamtxRtsp}/camera_${camera}` : null,
    };
  });

  app.get<{ Querystring: { id?: string } }>("/webrtc/stats", async (req) => {
    const id = req.query.id;
    if (id !== undefined) assertId("camera", id);
    const cameras = core.relay.stats(id);
    const holder = id !== undefined && cameras.length === 0 ? await core.directory.holder(id) : undefined;
    return {
      gateway: core.gatewayId,
      url: core.publicUrl,
      viewers: core.relay.totalViewers(),
      max_viewers: core.config.relayMaxViewers,
      max_viewers_per_camera: core.config.relayMaxViewersPerCamera,
      cameras,
      ...(holder !== undefined ? { relay: { gateway: holder.gateway, url: holder.url, publishing: holder.publishing, viewers: holder.viewers } } : {}),
    };
  });
}
