import { readFile } from 'node:fs/promises'
import t from 'tap'
import { parse as parseYaml } from 'yaml'
import { USER_KEY, openStream, postStream, startEmulator, startGateway, waitUntil, within } from './support/gateway.js'
import { Exposition } from './support/prometheus.js'
import { Value } from 'typebox/value'
import { EnvSchema, type Env } from '../standalone/env.js'

const ROOT = new URL('../', import.meta.url)
const DASHBOARD_FILE = 'deploy/grafana/dashboards/amrikyy-gateway.json'

/** The panels issue 4 asks for, by title. */
const REQUIRED_PANELS = [
  'Active streams',
  'Stream rate by outcome',
  'Chunk rate',
  'Stream duration percentiles (completed)',
  'Time to first chunk percentiles',
  'Tokens per agent and model',
  'Upstream errors by status',
  'Rate limited (429)',
  'Auth failures by reason',
  // Issue 19.
  'Resumed streams',
  // Issue 17: a row of its own, below the stream panels.
  'Spend per key',
  'Tokens per key',
  'Requests per key by outcome',
  'Cost per key (USD per hour)'
]

/** The panels of the "Spend per key" row, which read the per-key metrics. */
const KEY_PANELS = ['Tokens per key', 'Requests per key by outcome', 'Cost per key (USD per hour)']

interface DatasourceRef { type?: string, uid?: string }
interface Target { expr?: string, datasource?: DatasourceRef }
interface Panel { title: string, type: string, datasource?: DatasourceRef, targets?: Target[], gridPos?: { x: number, y: number, w: number, h: number } }
interface Variable { name: string, datasource?: DatasourceRef, definition?: string, query?: string | { query?: string }, multi?: boolean, includeAll?: boolean, allValue?: string }
interface Dashboard { uid: string, panels: Panel[], templating: { list: Variable[] } }

async function readText (path: string): Promise<string> {
  return await readFile(new URL(path, ROOT), 'utf8')
}

async function readYaml<T> (path: string): Promise<T> {
  // Compose files share settings through YAML merge keys (`<<: *gateway`), which YAML 1.2 leaves out by default.
  return parseYaml(await readText(path), { merge: true }) as T
}

const PROMQL_KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'offset', 'atan2', 'inf', 'nan'])

/**
 * The metric names a PromQL expression selects. String literals, range and subquery brackets, label
 * matchers, grouping label lists and numbers (durations included) are removed first; of the identifiers
 * left, those followed by `(` are functions or aggregations, and the rest, keywords aside, are metric names.
 */
function metricNamesIn (expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/(?<![\w:])\d[\w.]*/g, ' ')
  const names = new Set<string>()
  for (const match of stripped.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const identifier = match[0]
    const rest = stripped.slice((match.index ?? 0) + identifier.length)
    if (/^\s*\(/.test(rest) || PROMQL_KEYWORDS.has(identifier.toLowerCase())) continue
    names.add(identifier)
  }
  return [...names]
}

/** Grafana's `label_values(selector, label)` variable query: the selector is PromQL. */
function variableQuery (variable: Variable): { selector: string, label: string } {
  const query = typeof variable.query === 'string' ? variable.query : variable.query?.query ?? variable.definition ?? ''
  const match = /^\s*label_values\(\s*(.*?)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$/.exec(query)
  if (match === null) throw new Error(`variable ${variable.name}: not a label_values(selector, label) query: ${query}`)
  return { selector: match[1] ?? '', label: match[2] ?? '' }
}

/**
 * Every selector of a metric in a PromQL expression: its name and its label matchers, each written
 * `label op "value"` without spaces (none when the selector has no braces).
 */
function selectorsIn (expr: string): Array<{ name: string, matchers: string[] }> {
  return metricNamesIn(expr).flatMap(name => [...expr.matchAll(new RegExp(`(?<![\\w:])${name}(?![\\w:])\\s*(?:\\{([^}]*)\\})?`, 'g'))]
    .map(match => ({
      name,
      matchers: [...(match[1] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"/g)]
        .map(([, label = '', op = '', value = '']) => `${label}${op}"${value}"`)
    })))
}

/** The gateway's per-stream metrics, which carry the `api`, `agent` and `model` labels (resumes carry `api` only). */
function isStreamMetric (name: string): boolean {
  return (name.startsWith('amrikyy_stream_') && name !== 'amrikyy_stream_resumes_total') || name === 'amrikyy_active_streams'
}

/** The per-key metrics, which carry the `key` label and none of the stream labels. */
function isKeyMetric (name: string): boolean {
  return (name.startsWith('amrikyy_key_') && name !== 'amrikyy_key_budget_store_errors_total') || name === 'amrikyy_cost_usd_total'
}

/** What every selector of a stream metric in a panel must match, so each of the dashboard's filters applies to it. */
const STREAM_FILTERS = ['api=~"$api"', 'agent=~"$agent"', 'model=~"$model"']

t.test('metricNamesIn finds metric names and nothing else', async t => {
  t.same(metricNamesIn('histogram_quantile(0.95, sum by (le) (rate(amrikyy_stream_duration_seconds_bucket{agent=~"$agent", outcome="completed"}[$__rate_interval])))'),
    ['amrikyy_stream_duration_seconds_bucket'])
  t.same(metricNamesIn('sum by (agent, model, type) (rate(amrikyy_stream_tokens_total{model=~"a(b)"}[5m])) * 60'), ['amrikyy_stream_tokens_total'])
  t.same(metricNamesIn('a_total / on (instance) group_left (job) b_total offset 5m > bool 0'), ['a_total', 'b_total'])
  t.same(metricNamesIn('process_resident_memory_bytes{job="amrikyy-gateway"}'), ['process_resident_memory_bytes'])
  t.same(metricNamesIn('rate(x_total[1m:30s]) * 1e3 + y2_total'), ['x_total', 'y2_total'])
})

t.test('selectorsIn finds each selector of a metric and its matchers', async t => {
  t.same(selectorsIn('sum(rate(amrikyy_stream_chunks_sent_total{api=~"$api", agent = "a,b"}[5m])) / sum(amrikyy_stream_chunks_sent_total)'), [
    { name: 'amrikyy_stream_chunks_sent_total', matchers: ['api=~"$api"', 'agent="a,b"'] },
    { name: 'amrikyy_stream_chunks_sent_total', matchers: [] }
  ])
  t.same(selectorsIn('histogram_quantile(0.5, sum by (le) (rate(amrikyy_stream_duration_seconds_bucket{outcome!="failed"}[1m])))'),
    [{ name: 'amrikyy_stream_duration_seconds_bucket', matchers: ['outcome!="failed"'] }])
  t.same(selectorsIn('amrikyy_active_streams_total + amrikyy_active_streams{model="x"}'), [
    { name: 'amrikyy_active_streams_total', matchers: [] },
    { name: 'amrikyy_active_streams', matchers: ['model="x"'] }
  ])
})

t.test('every metric the dashboard queries exists in a real scrape of the gateway', async t => {
  const dashboard = JSON.parse(await readText(DASHBOARD_FILE)) as Dashboard
  const emulator = await startEmulator(t, { chunkCount: 4, defaultMaxTokens: 12 })
  // A budget of five (a resume is a request too): the sixth keyed request is refused, so the 429 panel has data too.
  // A price table, so that the cost panel has data as a deployment with prices would.
  const { url } = await startGateway(t, emulator, { rateLimit: { max: 5 }, prices: { 'gemini-*': { prompt: 0.3, completion: 2.5 } } })

  // One stream of each outcome, one refused key and one 429, so every family the dashboard reads has samples.
  t.match(await (await postStream(url, { prompt: 'completes', agent: 'dash' })).text(), /"complete":true/)
  // A resumable stream read again: the resumes panel has data (its stream completes too).
  const resumable = await postStream(url, { prompt: 'completes and is resumed', agent: 'dash', resumable: true })
  t.match(await resumable.text(), /"complete":true/)
  t.equal((await fetch(`${url}/api/stream/${resumable.headers.get('x-stream-id') ?? ''}`, { headers: { 'x-api-key': USER_KEY } })).status, 200)
  // Every attempt fails, however many times the gateway retries a 503.
  emulator.addFault({ kind: 'http-error', status: 503 }, { match: 'fails before the first chunk', times: Infinity })
  t.equal((await postStream(url, { prompt: 'fails before the first chunk', agent: 'dash' })).status, 500)
  emulator.addFault({ kind: 'stall', afterChunks: 1 })
  const leaving = await openStream(url, { prompt: 'leaves after the first chunk', agent: 'dash' })
  await within(5000, leaving.waitFor('"index":1}'), 'first chunk')
  leaving.disconnect()
  await within(5000, emulator.requests.at(-1)!.closed, 'upstream closed after the disconnect')
  t.equal((await postStream(url, { prompt: 'no key' }, {})).status, 401)
  t.equal((await postStream(url, { prompt: 'over the limit', agent: 'dash' })).status, 429)
  await waitUntil(() => emulator.openStreams() === 0, 5000, 'emulator idle')

  const scrape = await fetch(`${url}/api/metrics`)
  t.equal(scrape.status, 200)
  const exposition = new Exposition(await scrape.text())
  t.equal(exposition.value('amrikyy_stream_sessions_completed_total'), 2)
  t.equal(exposition.value('amrikyy_stream_resumes_total'), 1)
  t.equal(exposition.value('amrikyy_stream_sessions_failed_total'), 1)
  t.equal(exposition.value('amrikyy_stream_sessions_cancelled_total'), 1)
  t.equal(exposition.value('amrikyy_auth_failures_total'), 1)
  t.equal(exposition.value('amrikyy_rate_limited_total'), 1)
  t.equal(exposition.value('amrikyy_active_streams'), 0)
  // The keyed streams above, by the key's name: the per-key panels have data too.
  for (const [outcome, streams] of [['completed', 2], ['failed', 1], ['cancelled', 1]] as const) t.equal(exposition.value('amrikyy_key_requests_total', { outcome }), streams, `${streams} ${outcome} per key`)

  const queries = [
    ...dashboard.panels.flatMap(panel => (panel.targets ?? []).map(target => ({ where: `panel "${panel.title}"`, expr: target.expr ?? '' }))),
    ...dashboard.templating.list.map(variable => ({ where: `variable $${variable.name}`, expr: variableQuery(variable).selector }))
  ]
  t.ok(queries.length >= REQUIRED_PANELS.length, 'the dashboard has queries')
  for (const { where, expr } of queries) {
    const names = metricNamesIn(expr)
    t.ok(names.length > 0, `${where} selects a metric: ${expr}`)
    for (const name of names) {
      // Sample names carry histogram suffixes (_bucket, _sum, _count) exactly as PromQL selects them.
      t.ok(exposition.samples.some(sample => sample.name === name), `${where}: ${name} has samples in the scrape`)
    }
  }
  for (const variable of dashboard.templating.list) {
    const { selector, label } = variableQuery(variable)
    for (const name of metricNamesIn(selector)) {
      t.ok(exposition.samples.some(sample => sample.name === name && sample.labels[label] !== undefined), `variable $${variable.name}: ${name} has a ${label} label in the scrape`)
    }
  }
  t.equal(exposition.value('amrikyy_stream_sessions_completed_total', { api: 'stream' }), 2, '/api/stream is the api the filter offers as "stream"')
})

t.test('every stream query is filtered by the API, agent and model variables', async t => {
  const dashboard = JSON.parse(await readText(DASHBOARD_FILE)) as Dashboard
  const variables = new Map(dashboard.templating.list.map(variable => [variable.name, variable]))
  for (const name of ['api', 'agent', 'model']) {
    const variable = variables.get(name)
    t.ok(variable?.multi === true && variable.includeAll === true && variable.allValue === '.*', `$${name} is multi-select with an All that matches every value`)
  }
  const queryOf = (name: string): { selector: string, label: string } | undefined => {
    const variable = variables.get(name)
    return variable === undefined ? undefined : variableQuery(variable)
  }
  t.same(queryOf('api'), { selector: 'amrikyy_active_streams', label: 'api' }, '$api offers every api that has streamed')
  for (const name of ['agent', 'model']) {
    t.same(selectorsIn(queryOf(name)?.selector ?? '').map(selector => selector.matchers), [['api=~"$api"']], `$${name} offers the values of the chosen APIs`)
  }

  let streamSelectors = 0
  for (const panel of dashboard.panels) {
    for (const { expr = '' } of panel.targets ?? []) {
      for (const { name, matchers } of selectorsIn(expr).filter(selector => isStreamMetric(selector.name))) {
        streamSelectors++
        for (const filter of STREAM_FILTERS) t.ok(matchers.includes(filter), `panel "${panel.title}": ${name} is filtered by ${filter}`)
      }
    }
  }
  t.ok(streamSelectors >= 13, `every stream panel's queries are checked (${streamSelectors} selectors)`)
})

t.test('the per-key panels sit in the "Spend per key" row and are filtered by the key variable', async t => {
  const dashboard = JSON.parse(await readText(DASHBOARD_FILE)) as Dashboard
  const key = dashboard.templating.list.find(variable => variable.name === 'key')
  t.ok(key?.multi === true && key.includeAll === true && key.allValue === '.*', '$key is multi-select with an All that matches every value')
  t.same(key === undefined ? undefined : variableQuery(key), { selector: 'amrikyy_key_requests_total', label: 'key' }, '$key offers every key that has streamed')

  const row = dashboard.panels.find(panel => panel.title === 'Spend per key')
  t.equal(row?.type, 'row')
  const rowY = row?.gridPos?.y ?? -1
  t.ok(dashboard.panels.filter(panel => panel !== row).every(panel => panel.type !== 'row'), 'the only row is "Spend per key"')
  let keySelectors = 0
  for (const panel of dashboard.panels) {
    const selectors = (panel.targets ?? []).flatMap(({ expr = '' }) => selectorsIn(expr))
    const readsKeys = selectors.some(selector => isKeyMetric(selector.name))
    t.equal(readsKeys, KEY_PANELS.includes(panel.title), `panel "${panel.title}" ${readsKeys ? 'reads' : 'does not read'} the per-key metrics`)
    // Grafana puts a panel in the row above it: everything under the row's line belongs to it.
    t.equal((panel.gridPos?.y ?? -1) > rowY, KEY_PANELS.includes(panel.title), `panel "${panel.title}" is ${KEY_PANELS.includes(panel.title) ? 'in' : 'above'} the "Spend per key" row`)
    for (const { name, matchers } of selectors.filter(selector => isKeyMetric(selector.name))) {
      keySelectors++
      t.ok(matchers.includes('key=~"$key"'), `panel "${panel.title}": ${name} is filtered by key=~"$key"`)
      t.notOk(matchers.some(matcher => /^(api|agent|model)/.test(matcher)), `panel "${panel.title}": ${name} is not filtered by the stream variables`)
    }
  }
  t.equal(keySelectors, 3)
})

t.test('the dashboard has the panels ops need, all on the provisioned datasource', async t => {
  const dashboard = JSON.parse(await readText(DASHBOARD_FILE)) as Dashboard
  const provisioning = await readYaml<{ datasources: Array<{ uid: string, type: string, url: string }> }>('deploy/grafana/provisioning/datasources/prometheus.yml')
  t.equal(provisioning.datasources.length, 1)
  const datasource = provisioning.datasources[0]!
  t.equal(datasource.type, 'prometheus')

  const titles = dashboard.panels.map(panel => panel.title)
  for (const title of REQUIRED_PANELS) t.ok(titles.includes(title), `panel "${title}"`)
  t.equal(new Set(titles).size, titles.length, 'panel titles are unique')

  // A row only groups the panels under it: it has no datasource and no queries.
  for (const panel of dashboard.panels.filter(panel => panel.type !== 'row')) {
    t.equal(panel.datasource?.uid, datasource.uid, `panel "${panel.title}" uses the provisioned datasource`)
    t.ok((panel.targets ?? []).length > 0, `panel "${panel.title}" has queries`)
    for (const target of panel.targets ?? []) t.equal(target.datasource?.uid, datasource.uid, `a query of "${panel.title}" uses the provisioned datasource`)
  }
  for (const variable of dashboard.templating.list) t.equal(variable.datasource?.uid, datasource.uid, `variable $${variable.name} uses the provisioned datasource`)

  const exprsOf = (title: string): string => (dashboard.panels.find(panel => panel.title === title)?.targets ?? []).map(target => target.expr).join('\n')
  t.match(exprsOf('Stream duration percentiles (completed)'), /histogram_quantile\(0\.95, sum by \(le\) \(rate\(amrikyy_stream_duration_seconds_bucket/)
  t.match(exprsOf('Time to first chunk percentiles'), /histogram_quantile\(0\.95, sum by \(le\) \(rate\(amrikyy_stream_time_to_first_chunk_seconds_bucket/)
  for (const outcome of ['completed', 'failed', 'cancelled']) t.match(exprsOf('Stream rate by outcome'), `amrikyy_stream_sessions_${outcome}_total`)
  t.match(exprsOf('Tokens per agent and model'), /sum by \(agent, model, type\)/)
  t.match(exprsOf('Tokens per key'), /sum by \(key, type\) \(rate\(amrikyy_key_tokens_total/)
  t.match(exprsOf('Requests per key by outcome'), /sum by \(key, outcome\) \(rate\(amrikyy_key_requests_total/)
  t.match(exprsOf('Cost per key (USD per hour)'), /sum by \(key, model\) \(rate\(amrikyy_cost_usd_total/)
})

interface ComposeService {
  build?: unknown
  image?: string
  environment?: Record<string, string | null>
  volumes?: string[]
  ports?: string[]
  depends_on?: Record<string, { condition: string }> | string[]
  networks?: string[]
  command?: string[]
  stop_grace_period?: string
}

t.test('compose, nginx, Prometheus and Grafana files point at each other', async t => {
  const compose = await readYaml<{ services: Record<string, ComposeService> }>('docker-compose.yml')
  const prometheus = await readYaml<{ scrape_configs: Array<{ job_name: string, metrics_path?: string, static_configs: Array<{ targets: string[] }> }> }>('deploy/prometheus.yml')
  const dashboards = await readYaml<{ providers: Array<{ options: { path: string } }> }>('deploy/grafana/provisioning/dashboards/amrikyy.yml')
  const nginx = await readText('deploy/nginx.conf')
  const dashboard = await readText(DASHBOARD_FILE)

  const gateways = Object.entries(compose.services).filter(([, service]) => service.environment?.NODE_ENV === 'production' && service.build !== undefined)
  t.same(gateways.map(([name]) => name), ['gateway-1', 'gateway-2'], 'two gateway replicas built from the Dockerfile')
  const gatewayAddresses = gateways.map(([name, service]) => `${name}:${service.environment?.PORT ?? ''}`)

  const job = prometheus.scrape_configs.find(config => config.job_name === 'amrikyy-gateway')
  t.ok(job, 'a scrape job for the gateway')
  t.equal(job?.metrics_path, '/api/metrics')
  t.same(job?.static_configs.flatMap(config => config.targets), gatewayAddresses, 'Prometheus scrapes each replica directly')
  t.match(dashboard, 'job=\\"amrikyy-gateway\\"', 'the dashboard filters on the scrape job name')

  const upstream = /upstream amrikyy_gateway \{([^}]*)\}/.exec(nginx)?.[1] ?? ''
  t.same([...upstream.matchAll(/^\s*server\s+(\S+)/gm)].map(match => match[1]), gatewayAddresses, 'nginx balances over both replicas')
  t.match(upstream, /keepalive \d+;/)
  for (const directive of ['proxy_buffering off;', 'proxy_cache off;', 'proxy_http_version 1.1;', "proxy_set_header Connection '';", 'proxy_read_timeout 1h;']) {
    t.ok(nginx.includes(directive), `nginx: ${directive}`)
  }

  const emulator = compose.services.emulator
  const emulatorUrl = `http://emulator:${emulator?.environment?.EMULATOR_PORT ?? ''}`
  for (const [name, service] of gateways) {
    t.equal(service.environment?.GEMINI_BASE_URL, `\${GEMINI_BASE_URL:-${emulatorUrl}}`, `${name} streams from the emulator unless told otherwise`)
    t.equal(service.environment?.REDIS_URL, 'redis://redis:6379', `${name} shares Redis`)
  }
  t.ok(compose.services.redis, 'a Redis service')
  t.ok(compose.services.nginx?.volumes?.includes('./deploy/nginx.conf:/etc/nginx/nginx.conf:ro'), 'nginx runs deploy/nginx.conf')
  t.ok(compose.services.nginx?.ports?.includes('8080:80'))
  t.ok(compose.services.prometheus?.volumes?.includes('./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro'), 'Prometheus runs deploy/prometheus.yml')
  const grafanaVolumes = compose.services.grafana?.volumes ?? []
  t.ok(grafanaVolumes.includes('./deploy/grafana/provisioning:/etc/grafana/provisioning:ro'), 'Grafana reads the provisioning files')
  t.ok(grafanaVolumes.includes(`./deploy/grafana/dashboards:${dashboards.providers[0]?.options.path ?? ''}:ro`), 'the dashboards folder is mounted where the provider looks')
})

t.test('the replicas believe X-Forwarded-For from nginx\'s network only, and nginx writes that header itself', async t => {
  const compose = await readYaml<{ services: Record<string, ComposeService>, networks?: Record<string, { ipam?: { config?: Array<{ subnet?: string }> } }> }>('docker-compose.yml')
  const nginx = await readText('deploy/nginx.conf')
  const subnet = compose.networks?.edge?.ipam?.config?.map(config => config.subnet)
  t.same(subnet, ['172.30.250.0/28'], 'the edge network has one fixed subnet')
  const onEdge = Object.entries(compose.services).filter(([, service]) => service.networks?.includes('edge') === true).map(([name]) => name)
  t.same(onEdge, ['gateway-1', 'gateway-2', 'nginx'], 'nothing but nginx reaches the replicas from the trusted network')
  t.same(compose.services.nginx?.networks, ['edge'])
  for (const name of ['gateway-1', 'gateway-2']) {
    t.equal(compose.services[name]?.environment?.TRUST_PROXY, `\${TRUST_PROXY:-${subnet?.[0] ?? ''}}`, `${name} trusts the edge network, never every peer`)
  }
  const forwardedFor = [...nginx.matchAll(/^\s*proxy_set_header\s+X-Forwarded-For\s+(\S+);/gim)].map(match => match[1])
  t.same(forwardedFor, ['$remote_addr'], 'nginx replaces a client\'s X-Forwarded-For instead of appending to it')
})

t.test('Docker waits longer than the gateway drains before it kills a replica', async t => {
  const compose = await readYaml<{ services: Record<string, ComposeService> }>('docker-compose.yml')
  const drainMs = (Value.Default(EnvSchema, {}) as Env).SHUTDOWN_TIMEOUT_MS
  for (const name of ['gateway-1', 'gateway-2']) {
    const service = compose.services[name]
    t.equal(service?.environment?.SHUTDOWN_TIMEOUT_MS, undefined, `${name} drains for the default ${drainMs} ms`)
    const grace = /^(\d+)s$/.exec(service?.stop_grace_period ?? '')?.[1]
    t.ok(grace !== undefined && Number(grace) * 1000 > drainMs, `${name}: stop_grace_period ${service?.stop_grace_period ?? 'unset (10s)'} exceeds the drain`)
  }
})

t.test('the compose Redis never evicts a rate-limit counter before its window ends', async t => {
  const compose = await readYaml<{ services: Record<string, ComposeService> }>('docker-compose.yml')
  const command = compose.services.redis?.command ?? []
  t.equal(command[command.indexOf('--maxmemory-policy') + 1], 'noeviction')
})
