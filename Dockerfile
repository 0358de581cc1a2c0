# syntax=docker/dockerfile:1

# Node 24 LTS is what the project is developed, tested and shipped on (package.json engines: Node 22.19 or newer).
ARG NODE_IMAGE=node:24-bookworm-slim

# Build stage: the full toolchain (TypeScript, type definitions) compiles to dist/ and is then thrown away.
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build

# Runtime stage: production dependencies and the compiled JavaScript only, run as the unprivileged `node` user.
# Fastify is a peer dependency, which `npm ci --omit=dev` still installs for the standalone server.
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=5000
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
# Read from disk when the browser playground is enabled (PLAYGROUND=true; off by default in production).
COPY --from=build /app/playground ./playground
USER node
EXPOSE 5000
# The slim image has no curl or wget: Node's own fetch probes the liveness endpoint.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 5000) + '/health/live').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# The image also runs the Gemini emulator: `node dist/emulator/cli.js` (see docker-compose.yml).
CMD ["node", "dist/server.js"]
