import { prepareTemplates, waitForServices } from './templates.ts';

/**
 * Runs once per `vitest run`: checks Postgres and RabbitMQ answer (with a clear message if not)
 * and builds one migrated template database per folder under `migrations/`.
 */
export default async function setup() {
  await waitForServices();
  const templates = await prepareTemplates();
  process.env.STRANGLER_TEST_TEMPLATES = JSON.stringify(templates);
}
