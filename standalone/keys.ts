import { randomBytes } from 'node:crypto'
import type { GatewayOptions } from '../app.js'
import { ConfigError } from './config-error.js'
import { splitList, type Env } from './env.js'
import { loadKeysFile } from './keys-file.js'

export type KeyChoice = Pick<GatewayOptions, 'apiKeys' | 'adminApiKeys' | 'keyEntries'>

/** The configured keys; without any, in development only, one generated for this run and printed to stderr. */
export async function chooseKeys (env: Env): Promise<KeyChoice> {
  const apiKeys = splitList(env.API_KEYS)
  const adminApiKeys = splitList(env.ADMIN_API_KEYS)
  const keyEntries = env.API_KEYS_FILE === undefined ? [] : await loadKeysFile(env.API_KEYS_FILE)
  if (apiKeys.length > 0 || adminApiKeys.length > 0 || keyEntries.length > 0) return { apiKeys, adminApiKeys, keyEntries }
  if (env.NODE_ENV === 'production') {
    throw new ConfigError('API_KEYS, ADMIN_API_KEYS or API_KEYS_FILE must be set when NODE_ENV=production: the gateway never runs open')
  }
  const generated = randomBytes(24).toString('base64url')
  const host = env.HOST === '0.0.0.0' || env.HOST === '::' ? 'localhost' : env.HOST
  // Written once to stderr, apart from the JSON log lines on stdout, so the key stays out of log pipelines.
  process.stderr.write([
    '',
    'API_KEYS is not set: generated a development key for this run:',
    `  ${generated}`,
    'Try it:',
    `  curl -N -X POST http://${host}:${env.PORT}/api/stream -H "Content-Type: application/json" -H "X-API-Key: ${generated}" -d '{"prompt":"Write a haiku about AI","agent":"poet"}'`,
    '',
    ''
  ].join('\n'))
  return { apiKeys: [generated], adminApiKeys: [] }
}
