/** Actor kinds the entry point registers with the runtime. */
import { cameraKind } from "./camera/camera-actor.ts";
import { startIngest } from "./camera/ingest.ts";
import { startWhip } from "../media/index.ts";

export { simKind } from "./sim.ts";

/** The camera actor with its real media parts: FFmpeg ingest and a werift WHIP publisher. */
export const cameraActorKind = cameraKind({ startIngest, startWhip });
