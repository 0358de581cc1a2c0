// The in-memory limiter over real sockets: a key that spent its budget stays refused however many other callers
// come after it, and the per-address counters of callers without a valid key are the only ones ever forgotten.

import type { FastifyInstance } from 'fastify'
import t, { type Test } from 'tap'
import { Agent, fetch } from 'undici'
import type { RateLimitOptions } from '../plugins/rate-limit.js'
import { USER_KEY, buildGateway, listenOnLoopback } from './support/gateway.js'
import { Exposition } from './support/prometheus.js'

const TOO_MANY_REQUESTS = '{"error":"Too Many Requests","message":"You have exceeded the request limit. Please try again later."}'
const FORBIDDEN = '{"error":"Forbidden: Invalid API key."}'
const PROMPT_REQUIRED = '{"error":"Prompt is required"}'
// Nothing listens there: every request below stops before an upstream call (400, 403 or 429).
const NO_UPSTREAM = 'http://127.0.0.1:9'
const MAX = 2

interface Answer { status: number, body: string, remaining: string | null }

async function evictions (url: string): Promise<number> {
  return new Exposition(await (await fetch(`${url}/api/metrics`)).text()).value('amrikyy_rate_limit_address_evictions_total')
}

async function gateway (t: Test, rateLimit: RateLimitOptions): Promise<string> {
  // The test is the proxy: X-Forwarded-For from loopback is believed, so one socket can speak for many addresses.
  const app: FastifyInstance = await buildGateway(t, NO_UPSTREAM, { rateLimit: { max: MAX, ...rateLimit } }, { trustProxy: '127.0.0.1' })
  return await listenOnLoopback(app)
}

function client (t: Test): Agent {
  const agent = new Agent({ connections: 16 })
  t.teardown(async () => { await agent.close() })
  return agent
}

/** An empty body passes the limiter and stops at validation (400): a request with a valid key that costs nothing upstream. */
async function post (url: string, agent: Agent, headers: Record<string, string>): Promise<Answer> {
  const response = await fetch(`${url}/api/stream`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: '{}',
    dispatcher: agent
  })
  return { status: response.status, body: await response.text(), remaining: response.headers.get('x-ratelimit-remaining') }
}

/** `count` bad-key requests, each from its own address (10.x.y.z, only ever named in a header), 16 at a time. */
async function floodOfAddresses (url: string, agent: Agent, count: number, offset = 0): Promise<number[]> {
  const statuses: number[] = []
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < count) {
      const n = offset + next++
      const answer = await post(url, agent, { 'x-api-key': 'not-a-configured-key', 'x-forwarded-for': `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}` })
      statuses.push(answer.status)
    }
  }
  await Promise.all(Array.from({ length: 16 }, worker))
  return statuses
}

t.test('a key that spent its budget stays refused after 6,000 other callers (the old store forgot it after 5,000)', async t => {
  const url = await gateway(t, {})
  const agent = client(t)
  const spend = [await post(url, agent, { 'x-api-key': USER_KEY }), await post(url, agent, { 'x-api-key': USER_KEY })]
  t.same(spend, [{ status: 400, body: PROMPT_REQUIRED, remaining: '1' }, { status: 400, body: PROMPT_REQUIRED, remaining: '0' }])
  t.same(await post(url, agent, { 'x-api-key': USER_KEY }), { status: 429, body: TOO_MANY_REQUESTS, remaining: '0' })

  const flood = await floodOfAddresses(url, agent, 6000)
  t.equal(flood.filter(status => status === 403).length, 6000, 'each new address has its own budget')

  t.same(await post(url, agent, { 'x-api-key': USER_KEY }), { status: 429, body: TOO_MANY_REQUESTS, remaining: '0' }, 'the spent key is still refused')
  t.equal(await evictions(url), 0, 'the default bound holds 6,000 addresses')
})

t.test('past maxAddresses the least recently seen address is forgotten, never a key', async t => {
  const url = await gateway(t, { maxAddresses: 100 })
  const agent = client(t)
  const spender = { 'x-api-key': 'not-a-configured-key', 'x-forwarded-for': '192.0.2.1' }
  for (let i = 0; i < MAX; i++) await post(url, agent, { 'x-api-key': USER_KEY })
  t.same((await post(url, agent, spender)).remaining, '1')
  t.same((await post(url, agent, spender)).remaining, '0')
  t.same(await post(url, agent, spender), { status: 429, body: TOO_MANY_REQUESTS, remaining: '0' })

  // 99 more addresses fill the bound exactly: the spender is still remembered.
  t.same(await floodOfAddresses(url, agent, 99), Array.from({ length: 99 }, () => 403))
  t.same(await post(url, agent, spender), { status: 429, body: TOO_MANY_REQUESTS, remaining: '0' }, 'within the bound an address is remembered')
  t.equal(await evictions(url), 0)

  // 100 addresses more push the spender out: its next request starts a fresh window. The key is never pushed out.
  t.same(await floodOfAddresses(url, agent, 100, 1000), Array.from({ length: 100 }, () => 403))
  t.same(await post(url, agent, spender), { status: 403, body: FORBIDDEN, remaining: '1' }, 'past the bound the oldest address starts over')
  t.same(await post(url, agent, { 'x-api-key': USER_KEY }), { status: 429, body: TOO_MANY_REQUESTS, remaining: '0' }, 'the spent key is still refused')
  t.equal(await evictions(url), 101, 'the 99 first flood addresses, then the spender, then one for the spender\'s return')
})

t.test('a counter whose window already ended is dropped without counting as an eviction', async t => {
  // The store's clock, moved by hand: the window is crossed to the millisecond, without waiting for it.
  let clock = 1_000_000
  const url = await gateway(t, { maxAddresses: 5, timeWindow: 2000, now: () => clock })
  const agent = client(t)
  t.same(await floodOfAddresses(url, agent, 5), Array.from({ length: 5 }, () => 403))
  clock += 1999
  t.same(await floodOfAddresses(url, agent, 1, 100), [403])
  t.equal(await evictions(url), 1, 'one millisecond before the window ends, the oldest counter is still live')
  // Past the window every counter of the first flood is over: making room for new addresses costs no one a live budget.
  clock += 1
  t.same(await floodOfAddresses(url, agent, 4, 200), Array.from({ length: 4 }, () => 403))
  t.equal(await evictions(url), 1)
  t.same(await floodOfAddresses(url, agent, 1, 300), [403])
  t.equal(await evictions(url), 2, 'the address counted a millisecond before the first window ended is still live')
})

t.test('maxAddresses must be a positive integer', async t => {
  for (const maxAddresses of [0, 1.5, -1]) {
    await t.rejects(buildGateway(t, NO_UPSTREAM, { rateLimit: { maxAddresses } }), { message: 'rate-limit: option "maxAddresses" must be a positive integer' })
  }
})
