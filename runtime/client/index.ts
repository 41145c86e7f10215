/** The client side of the cluster: control requests, event tailing, alert consumers. Used by the CLI, the gateway and examples. */
export { ControlClient } from "./control-client.ts";
export type { ControlClientOptions, ControlResult, WriteOptions } from "./control-client.ts";
export { parseSince, startAlertConsumer, tailEvents } from "./event-consumers.ts";
export type { AlertConsumer, AlertConsumerOptions, CamfleetEvent, EventMeta, EventType, StartAt, TailOptions } from "./event-consumers.ts";
