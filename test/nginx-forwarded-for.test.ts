// deploy/nginx.conf decides which address a caller without a valid key is throttled as. nginx runs the deploy file
// rewritten for loopback exactly as `npm run e2e:scale` runs it; the gateway is the standalone server process,
// trusting X-Forwarded-For from nginx's address only, as docker-compose.yml trusts nginx's network only
// (test/dashboard.test.ts checks that pairing in the compose file).

import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { findNginx, localNginxConfig, nginxArgs } from '../scripts/nginx-local.js'
import { LOOPBACK, freePort } from '../scripts/shared/ports.js'
import { startServerProcess } from './support/server-process.js'
import { startChild } from '../scripts/shared/child-process.js'

const ROOT = fileURLToPath(new URL('../', import.meta.url))
const NGINX = findNginx()
const NGINX_SKIP: string | false = NGINX === undefined ? 'nginx is not installed (Debian: apt-get install -y nginx; .ci/run installs it)' : false
const MAX = 3
const FORBIDDEN = '{"error":"Forbidden: Invalid API key."}'
const TOO_MANY_REQUESTS = '{"error":"Too Many Requests","message":"You have exceeded the request limit. Please try again later."}'

interface Answer { status: number, body: string, remaining: string | undefined }

/** A bad-key request through nginx, sent from `localAddress` (any 127.0.0.0/8 address reaches loopback). */
async function badKeyRequest (url: string, localAddress: string, forwardedFor: string | undefined): Promise<Answer> {
  return await new Promise((resolve, reject) => {
    const req = request(`${url}/api/stream`, {
      method: 'POST',
      localAddress,
      agent: false,
      headers: {
        'content-type': 'application/json',
        'x-api-key': 'not-a-configured-key',
        ...(forwardedFor === undefined ? {} : { 'x-forwarded-for': forwardedFor })
      }
    }, response => {
      let body = ''
      response.setEncoding('utf8')
      response.on('data', (piece: string) => { body += piece })
      response.on('end', () => {
        const remaining = response.headers['x-ratelimit-remaining']
        resolve({ status: response.statusCode ?? 0, body, remaining: typeof remaining === 'string' ? remaining : undefined })
      })
    })
    req.on('error', reject)
    req.end('{"prompt":"p"}')
  })
}

/** deploy/nginx.conf on loopback in front of `gatewayPorts`; stopped on teardown. */
async function startNginx (t: Test, nginx: string, gatewayPorts: number[]): Promise<string> {
  const prefix = await mkdtemp(join(tmpdir(), 'amrikyy-nginx-test-'))
  const port = await freePort()
  const configFile = join(prefix, 'nginx.conf')
  await writeFile(configFile, localNginxConfig(await readFile(join(ROOT, 'deploy/nginx.conf'), 'utf8'), gatewayPorts, port, prefix))
  const child = await startChild({ name: 'nginx', command: nginx, args: [...nginxArgs(prefix, configFile), '-g', 'daemon off;'], env: process.env, output: 'stderr' })
  t.teardown(async () => {
    await child.stop()
    await rm(prefix, { recursive: true, force: true })
  })
  const url = `http://${LOOPBACK}:${port}`
  // The deploy file answers 404 for /api/metrics itself: proof that this nginx runs that file.
  await child.waitFor(async () => await fetch(`${url}/api/metrics`).then(response => response.status === 404, () => false), 'nginx serving the deploy file', { timeoutMs: 10_000, pollMs: 50 })
  return url
}

t.test('through deploy/nginx.conf, a rotating spoofed X-Forwarded-For is throttled as the one real client', { skip: NGINX_SKIP }, async t => {
  const gateway = await startServerProcess(t, {
    // nginx connects to its upstreams from 127.0.0.1 here. Clients on loopback share that address, so the gateway
    // alone cannot tell them from nginx: what this proves rests on nginx replacing the header.
    TRUST_PROXY: LOOPBACK,
    RATE_LIMIT_MAX: String(MAX),
    // Bad keys are refused before any upstream call: nothing needs to listen there.
    GEMINI_BASE_URL: 'http://127.0.0.1:9'
  })
  const gatewayPort = Number(new URL(gateway.url).port)
  // Both upstream entries of the deploy file name the one gateway, so one in-memory budget sees every request.
  const url = await startNginx(t, NGINX ?? 'nginx', [gatewayPort, gatewayPort])

  // The spoofed values only travel inside a header (TEST-NET-2 addresses, RFC 5737); every socket is loopback.
  const spoofed: Answer[] = []
  for (let i = 1; i <= MAX + 3; i++) spoofed.push(await badKeyRequest(url, '127.0.0.1', `198.51.100.${i}`))
  t.same(spoofed.slice(0, MAX), [
    { status: 403, body: FORBIDDEN, remaining: '2' },
    { status: 403, body: FORBIDDEN, remaining: '1' },
    { status: 403, body: FORBIDDEN, remaining: '0' }
  ], 'the first requests spend one budget, whatever address each claims')
  t.same(spoofed.slice(MAX).map(answer => [answer.status, answer.body]), Array.from({ length: 3 }, () => [429, TOO_MANY_REQUESTS]),
    'a new spoofed address never buys a new budget')

  // A header naming a chain (what a client behind its own proxy sends, or a spoofer hoping its entry is the one read).
  t.same(await badKeyRequest(url, '127.0.0.1', '198.51.100.200, 198.51.100.201'), { status: 429, body: TOO_MANY_REQUESTS, remaining: '0' })

  // A different real client still has its own budget: the gateway sees addresses through nginx, not nginx's alone.
  t.same(await badKeyRequest(url, '127.0.0.2', '198.51.100.1'), { status: 403, body: FORBIDDEN, remaining: '2' })
  t.same(await badKeyRequest(url, '127.0.0.2', undefined), { status: 403, body: FORBIDDEN, remaining: '1' })
})
