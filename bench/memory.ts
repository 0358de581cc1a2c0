// Memory held per idle open stream: N streams opened through a server whose upstream (an emulator
// in this process) stalls after the first chunk, the server's RSS read while they sit open, then
// all clients leave and the bench checks that every upstream stream was let go.

import { Agent, request as httpRequest, type ClientRequest } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { GeminiEmulator } from '../emulator/server.js'
import { startGatewayProcess, startProxyProcess, type Child, type GatewayProcessOptions } from './children.js'
import { keepAliveAgent, runLoad } from './load.js'
import { promptFor, targetFor, type PathName, type UpstreamPace } from './harness.js'
import { memory } from '../scripts/shared/procfs.js'

export interface MemoryReport {
  server: Exclude<PathName, 'direct'>
  openStreams: number
  rssBeforeMiB: number
  rssOpenMiB: number
  kibPerOpenStream: number
  rssAfterCloseMiB: number
  /** Every upstream stream closed (and, for a gateway build, its active-streams gauge back to 0). */
  released: boolean
  releaseProblem?: string | undefined
}

const IDLE_MARK = 'idle stream'

async function waitFor (check: () => Promise<boolean> | boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) return false
    await sleep(50)
  }
  return true
}

/** Opens one stream and resolves once its first body bytes arrived; the request stays open. */
async function openIdleStream (agent: Agent, path: PathName, url: string, prompt: string): Promise<ClientRequest> {
  const target = targetFor(path, url)
  const payload = target.body(prompt)
  return await new Promise((resolve, reject) => {
    const req = httpRequest(target.url, {
      agent,
      method: 'POST',
      headers: { ...target.headers, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)) }
    }, response => {
      if (response.statusCode !== 200) reject(new Error(`idle stream got status ${String(response.statusCode)}`))
      response.once('data', () => resolve(req))
      response.on('error', () => {})
    })
    req.on('error', reject)
    req.end(payload)
  })
}

async function activeGatewayStreams (gatewayUrl: string): Promise<number> {
  const response = await fetch(`${gatewayUrl}/api/metrics`)
  const text = await response.text()
  let sum = 0
  for (const line of text.split('\n')) {
    if (line.startsWith('amrikyy_active_streams{') || line.startsWith('amrikyy_active_streams ')) sum += Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return sum
}

export async function measureIdleStreams (server: Exclude<PathName, 'direct'>, openStreams: number, pace: UpstreamPace, log: (line: string) => void = () => {}, gateway: GatewayProcessOptions = {}): Promise<MemoryReport> {
  const emulator = await GeminiEmulator.start({ chunkCount: pace.chunkCount, chunkDelayMs: pace.chunkDelayMs, defaultMaxTokens: pace.defaultMaxTokens })
  emulator.addFault({ kind: 'stall', afterChunks: 1 }, { match: IDLE_MARK, times: Infinity })
  let child: Child | undefined
  const requests: ClientRequest[] = []
  const agent = new Agent({ keepAlive: false, maxSockets: Infinity })
  try {
    // `gateway` is the options of whichever build `server` names: this one's or the baseline's.
    child = server === 'proxy' ? await startProxyProcess(emulator.url) : await startGatewayProcess(emulator.url, { ...gateway, name: server })
    const warmAgent = keepAliveAgent(20)
    await runLoad(warmAgent, targetFor(server, child.url), { streams: 200, concurrency: 20, promptFor: i => promptFor(i, 64) })
    warmAgent.destroy()
    await sleep(500)
    const before = memory(child.pid).rssKiB

    const batch = 250
    for (let opened = 0; opened < openStreams; opened += batch) {
      const count = Math.min(batch, openStreams - opened)
      const url = child.url
      requests.push(...await Promise.all(Array.from({ length: count }, (_, i) => openIdleStream(agent, server, url, `${IDLE_MARK} ${opened + i}`))))
    }
    await sleep(1000)
    const open = memory(child.pid).rssKiB
    const upstreamOpen = emulator.openStreams()
    log(`idle ${server} n=${openStreams}: rss ${(before / 1024).toFixed(1)} -> ${(open / 1024).toFixed(1)} MiB, emulator sees ${upstreamOpen} open streams`)

    for (const req of requests) req.destroy()
    let releaseProblem: string | undefined
    if (!(await waitFor(() => emulator.openStreams() === 0, 20_000))) {
      releaseProblem = `${emulator.openStreams()} upstream streams still open 20 s after the clients left`
    } else if (server !== 'proxy') {
      const url = child.url
      if (!(await waitFor(async () => await activeGatewayStreams(url) === 0, 10_000))) releaseProblem = 'amrikyy_active_streams did not return to 0'
    }
    if (upstreamOpen !== openStreams && releaseProblem === undefined) releaseProblem = `only ${upstreamOpen} of ${openStreams} upstream streams were open at once`
    await sleep(1000)
    const after = memory(child.pid).rssKiB
    return {
      server,
      openStreams,
      rssBeforeMiB: before / 1024,
      rssOpenMiB: open / 1024,
      kibPerOpenStream: (open - before) / openStreams,
      rssAfterCloseMiB: after / 1024,
      released: releaseProblem === undefined,
      releaseProblem
    }
  } finally {
    for (const req of requests) req.destroy()
    agent.destroy()
    await child?.stop()
    await emulator.close()
  }
}
