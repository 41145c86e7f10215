// htm: JSX-like templates in plain JavaScript, rendered by Preact; no compiler.
import { h } from "preact";
import htm from "htm";

export const html = htm.bind(h);
