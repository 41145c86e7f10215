/** The HTTP gateway and its built-in WHIP/WHEP relay. Uses runtime/ and subjects/; reaches actors over NATS only. */
export { startGateway } from "./gateway.ts";
export type { Gateway, GatewayOptions } from "./gateway.ts";
export { GatewayCore } from "./core.ts";
export { Relay } from "./relay.ts";
export type { CameraRelayStats, RelayOptions, SessionKind } from "./relay.ts";

