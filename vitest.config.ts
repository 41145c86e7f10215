import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Fails the run if any process a test started (nats-server, ffmpeg, nodes) outlives the suite.
    globalSetup: ["test/helpers/global-setup.ts"],
    // Tests start real servers; waits inside tests carry their own deadlines.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    maxWorkers: 2,
  },
});
