/** Actor kinds. The camera actor joins here when it is built. */
export { simKind } from "./sim.ts";
