import Fastify from 'fastify'
import fastifyMetricsModule from 'fastify-metrics'
import promClient from '@prometheus-io/client'
import t from 'tap'
import streamGateway, { authPlugin, geminiClientPlugin, lifecyclePlugin, metricsPlugin, rateLimitPlugin, streamRoute } from '../index.js'
import { answerFor } from '../emulator/server.js'
import { USER_KEY, expectedStreamBody, startEmulator } from './support/gateway.js'
import { Exposition } from './support/prometheus.js'

const PACE = { chunkCount: 3, defaultMaxTokens: 9 }

t.test('a host app keeps its routes, error handler and metrics while the gateway streams under /ai', async t => {
  const emulator = await startEmulator(t, PACE)
  const host = Fastify({ logger: false, forceCloseConnections: true })
  t.teardown(async () => {
    await host.close()
    promClient.register.clear()
  })

  // The host's own observability, error handling and authentication, registered before the gateway.
  await host.register(fastifyMetricsModule.default, { endpoint: '/metrics' })
  host.setErrorHandler(async (error: Error, _request, reply) => await reply.code(418).send({ host: 'handled', reason: error.message }))
  host.get('/hello', async () => ({ hello: 'world' }))
  host.get('/boom', async () => { throw new Error('host failure') })
  host.get('/private', {
    onRequest: async (request, reply) => {
      if (request.headers.authorization !== 'Bearer host-token') return await reply.code(401).send({ host: 'login first' })
      return undefined
    }
  }, async () => ({ secret: 'host data' }))

  await host.register(streamGateway, {
    prefix: '/ai',
    apiKeys: [USER_KEY],
    gemini: { apiKey: 'upstream-key', baseUrl: emulator.url },
    metrics: { registry: promClient.register, endpoint: null }
  })
  await host.listen({ port: 0, host: '127.0.0.1' })
  const address = host.server.address()
  const url = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`

  const hello = await fetch(`${url}/hello`)
  t.equal(hello.status, 200)
  t.same(await hello.json(), { hello: 'world' })
  t.equal(hello.headers.get('x-ratelimit-limit'), null, 'no rate limit on host routes')
  t.equal(hello.headers.get('x-request-id'), null, 'no gateway headers on host routes')
  t.same(await (await fetch(`${url}/boom`)).json(), { host: 'handled', reason: 'host failure' }, 'the host error handler still answers for host routes')
  const privateRoute = await fetch(`${url}/private`, { headers: { authorization: 'Bearer host-token' } })
  t.same(await privateRoute.json(), { secret: 'host data' }, 'host auth, not the gateway key check')
  t.equal((await fetch(`${url}/private`)).status, 401)

  const stream = await fetch(`${url}/ai/api/stream`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': USER_KEY }, body: JSON.stringify({ prompt: 'hello host', agent: 'embedded' }) })
  t.equal(stream.status, 200)
  t.equal(stream.headers.get('x-ratelimit-limit'), '100')
  const answer = answerFor('hello host', undefined, PACE)
  t.equal(await stream.text(), expectedStreamBody(answer.deltas, answer))
  const refused = await fetch(`${url}/ai/api/stream`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"prompt":"x"}' })
  t.equal(refused.status, 401)
  t.equal(await refused.text(), '{"error":"Unauthorized: API key is missing."}', 'the gateway error bodies inside its prefix')
  const invalid = await fetch(`${url}/ai/api/stream`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': USER_KEY }, body: '{"prompt":""}' })
  t.equal(await invalid.text(), '{"error":"Prompt is required"}')

  const scrape = new Exposition(await (await fetch(`${url}/metrics`)).text())
  t.equal(scrape.value('amrikyy_stream_sessions_completed_total', { agent: 'embedded' }), 1, 'the gateway metrics in the host scrape')
  t.equal(scrape.value('http_request_duration_seconds_count', { route: '/hello', status_code: '200' }), 1, 'the host route metrics in the same scrape')
  t.equal(scrape.value('http_request_duration_seconds_count', { route: '/ai/api/stream' }), 0, 'the stream route opts out of whole-request timing')
  t.equal(scrape.labelSets('process_cpu_user_seconds_total').length, 1, 'Node process metrics registered once')
})

t.test('a plugin registered without what it needs fails at boot, naming the missing plugin', async t => {
  const rateLimitAlone = Fastify({ logger: false })
  rateLimitAlone.register(rateLimitPlugin, {})
  await t.rejects(async () => { await rateLimitAlone.ready() }, /amrikyy-auth/)

  const routeWithoutClient = Fastify({ logger: false })
  routeWithoutClient.register(authPlugin, { apiKeys: [USER_KEY] })
  routeWithoutClient.register(metricsPlugin, { endpoint: null, defaultMetrics: false })
  routeWithoutClient.register(lifecyclePlugin)
  routeWithoutClient.register(streamRoute, { defaultModel: 'gemini-2.0-flash-exp' })
  await t.rejects(async () => { await routeWithoutClient.ready() }, /amrikyy-gemini-client/)

  const misconfigured = Fastify({ logger: false })
  misconfigured.register(geminiClientPlugin, { apiKey: '' })
  await t.rejects(async () => { await misconfigured.ready() }, /option "apiKey"/)
})

t.test('the parts compose on their own in a host that brings its own pieces', async t => {
  const emulator = await startEmulator(t, PACE)
  const app = Fastify({ logger: false, forceCloseConnections: true })
  t.teardown(async () => { await app.close() })
  await app.register(async scope => {
    await scope.register(authPlugin, { apiKeys: [USER_KEY] })
    await scope.register(metricsPlugin, { endpoint: '/metrics', defaultMetrics: false })
    await scope.register(lifecyclePlugin)
    await scope.register(geminiClientPlugin, { apiKey: 'k', baseUrl: emulator.url })
    await scope.register(streamRoute, { defaultModel: 'gemini-2.5-flash' })
  }, { prefix: '/parts' })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  const url = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`
  const body = await (await fetch(`${url}/parts/api/stream`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': USER_KEY }, body: '{"prompt":"parts"}' })).text()
  const answer = answerFor('parts', undefined, PACE)
  t.equal(body, expectedStreamBody(answer.deltas, answer))
  t.equal(emulator.requests[0]?.model, 'gemini-2.5-flash')
  const scrape = new Exposition(await (await fetch(`${url}/parts/metrics`)).text())
  t.equal(scrape.sample('amrikyy_stream_sessions_completed_total', { api: 'stream', agent: 'unknown', model: 'gemini-2.5-flash' }), 1)
})
