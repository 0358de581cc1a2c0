// The package's entry: the whole gateway as one plugin, and each part on its own for hosts that
// already have some of them. Nothing here reads environment variables; only server.ts does.
export { default, default as streamGateway, DEFAULT_MODEL, type GatewayOptions } from './app.js'

export { default as authPlugin, callerOf, type AuthOptions, type AuthHooks, type ApiKeyEntry, type Caller, type RequestIdentity, type Role } from './plugins/auth.js'
export { default as metricsPlugin, metricsEndpoint, type MetricsOptions, type MetricsEndpointOptions, type GatewayMetrics, type StreamRecorder } from './plugins/metrics.js'
export { default as rateLimitPlugin, type RateLimitOptions } from './plugins/rate-limit.js'
export { default as geminiClientPlugin, UpstreamError, type GeminiClient, type GeminiClientOptions, type GeminiPluginOptions, type GenerationRequest, type GenerationDelta } from './plugins/gemini-client.js'
export { default as errorsPlugin } from './plugins/errors.js'
export { default as lifecyclePlugin, GatewayLifecycle, type LifecycleOptions, type DrainResult } from './plugins/lifecycle.js'
export { default as requestIdPlugin, genReqId } from './plugins/request-id.js'
export type { GatewayServices } from './plugins/services.js'
export { default as openApiPlugin, type OpenApiOptions } from './plugins/openapi.js'
export { default as streamRoute, type StreamRouteOptions } from './routes/stream.js'
export type { RelayOptions, StreamTimeouts } from './relay/settings.js'
export type { RetryPolicy } from './relay/retry.js'
export { default as healthRoute, type HealthRouteOptions } from './routes/health.js'
export * from './schemas/stream.js'
export { ErrorBody, Refusal, refusals } from './schemas/refusals.js'
