import { defineConfig } from 'vitest/config';

// Two projects run one after the other (see the `test` script):
// - `default`: every suite, files in parallel, each file with its own database and broker prefix;
// - `faults`: suites that stop or restart shared infrastructure (the RabbitMQ app, every broker
//   connection). They run alone, one file at a time, so they cannot break unrelated suites.
const faultFiles = ['**/*.fault.test.ts'];

export default defineConfig({
  test: {
    globalSetup: ['./platform/src/testing/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    teardownTimeout: 20_000,
    pool: 'forks',
    projects: [
      {
        extends: true,
        test: {
          name: 'default',
          include: ['**/*.test.ts'],
          exclude: ['**/node_modules/**', ...faultFiles],
        },
      },
      {
        extends: true,
        test: {
          name: 'faults',
          include: faultFiles,
          exclude: ['**/node_modules/**'],
          fileParallelism: false,
          testTimeout: 120_000,
        },
      },
    ],
  },
});
