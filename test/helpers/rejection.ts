// The error a promise rejects with, checked to be of the expected class, for
// tests that look at its code and message. A promise that resolves fails the test.

import { expect } from "vitest";

export async function rejection<E extends Error>(p: Promise<unknown>, kind: abstract new (...args: never[]) => E): Promise<E> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(kind);
  return err as E;
}
