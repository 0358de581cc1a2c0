// deploy/nginx.conf run on one machine, on loopback: shared by `npm run e2e:scale` and the tests that go
// through the shipped proxy configuration.

import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { LOOPBACK } from './shared/ports.js'

export class NginxConfigError extends Error {
  override name = 'NginxConfigError'
}

/** The nginx binary on this machine (Debian installs it in /usr/sbin, often off a user's PATH), or undefined. */
export function findNginx (): string | undefined {
  for (const candidate of ['nginx', '/usr/sbin/nginx']) {
    const probe = spawnSync(candidate, ['-v'], { stdio: 'ignore' })
    if (probe.error === undefined) return candidate
  }
  return undefined
}

// What decides how a request and a stream cross the proxy; the temp paths added here are about disk, not streaming.
const PROXY_DIRECTIVE = /^\s*(proxy_(?!temp_path)\w+|keepalive|least_conn|gzip)\b.*;\s*$/gm

/** The directives that must be identical between deploy/nginx.conf and the local copy. */
export function proxyDirectives (config: string): string[] {
  return [...config.matchAll(PROXY_DIRECTIVE)].map(match => match[0].trim())
}

/**
 * deploy/nginx.conf with only what differs on one machine rewritten: the upstream servers become the
 * local gateway ports, nginx listens on a loopback port, and logs, pid and temp files go under `prefix`.
 * Throws when the rewrite touched any proxy directive.
 */
export function localNginxConfig (deployConfig: string, gatewayPorts: number[], listenPort: number, prefix: string): string {
  const upstream = /(upstream amrikyy_gateway \{)([^}]*)(\})/.exec(deployConfig)
  if (upstream === null) throw new NginxConfigError('deploy/nginx.conf has no `upstream amrikyy_gateway { ... }` block')
  const servers = [...(upstream[2] ?? '').matchAll(/^(\s*server\s+)(\S+)/gm)]
  if (servers.length !== gatewayPorts.length) {
    throw new NginxConfigError(`deploy/nginx.conf lists ${servers.length} upstream servers; ${gatewayPorts.length} gateway ports were given`)
  }
  let serverIndex = 0
  const localUpstream = (upstream[2] ?? '').replace(/^(\s*server\s+)(\S+)/gm, (_line, head: string) => `${head}${LOOPBACK}:${gatewayPorts[serverIndex++] ?? ''}`)
  const replaceOnce = (text: string, pattern: RegExp, replacement: string): string => {
    if (!pattern.test(text)) throw new NginxConfigError(`deploy/nginx.conf: expected a line matching ${String(pattern)}`)
    return text.replace(pattern, replacement)
  }
  let config = deployConfig.replace(upstream[0], `${upstream[1]}${localUpstream}${upstream[3]}`)
  config = replaceOnce(config, /^(\s*)listen\s+80;/m, `$1listen ${LOOPBACK}:${listenPort};`)
  config = replaceOnce(config, /^pid\s+\S+;/m, `pid ${join(prefix, 'nginx.pid')};`)
  config = replaceOnce(config, /^error_log\s+\S+/m, `error_log ${join(prefix, 'error.log')}`)
  config = replaceOnce(config, /^(\s*)access_log\s+\S+;/m, `$1access_log ${join(prefix, 'access.log')};`)
  // Debian compiles temp paths under /var/lib/nginx, writable by root only; keep them in the prefix.
  const tempPaths = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
    .map(kind => `    ${kind}_temp_path ${join(prefix, `${kind}_temp`)};`).join('\n')
  config = replaceOnce(config, /^http \{\n/m, `http {\n${tempPaths}\n`)
  const deployed = proxyDirectives(deployConfig)
  const local = proxyDirectives(config)
  if (deployed.length === 0 || deployed.join('\n') !== local.join('\n')) {
    throw new NginxConfigError(`the local nginx config changed a proxy directive of deploy/nginx.conf:\n  deploy: ${deployed.join(' ')}\n  local:  ${local.join(' ')}`)
  }
  return config
}

/** nginx's command line for a config written to `configFile` under `prefix` (append `-t` to test it, `-g 'daemon off;'` to run it). */
export function nginxArgs (prefix: string, configFile: string): string[] {
  return ['-p', `${prefix}/`, '-c', configFile, '-e', join(prefix, 'error.log')]
}
