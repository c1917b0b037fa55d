# One image for every Strangler process; docker-compose.yml picks the entry point per service.
FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
COPY platform/package.json platform/
COPY outbox/package.json outbox/
COPY monolith/package.json monolith/
COPY facade/package.json facade/
COPY scripts/package.json scripts/
COPY extracted/notification/package.json extracted/notification/
# tsx (a dev dependency) runs the TypeScript sources, so dev dependencies are installed too;
# the embedded Postgres (optional) is not needed in containers.
RUN npm ci --include=dev --omit=optional --no-audit --no-fund
COPY . .
USER node
