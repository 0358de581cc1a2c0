import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import type { Test } from 'tap'

/** Tests that need the real Redis pass this as `skip`: CI sets REDIS_URL, a laptop without Redis skips them. */
export const REDIS_SKIP: string | false = process.env.REDIS_URL === undefined || process.env.REDIS_URL === '' ? 'REDIS_URL is not set' : false

// A database of their own, so the tests never read or delete anyone else's data.
const TEST_DATABASE = 7

/** REDIS_URL pointed at the tests' database (unless it already names one). */
export function testRedisUrl (): string {
  const url = new URL(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379')
  if (url.pathname === '' || url.pathname === '/') url.pathname = `/${TEST_DATABASE}`
  return url.toString()
}

export interface RedisNamespace {
  url: string
  nameSpace: string
  /** The keys currently stored under the namespace, sorted. */
  keys: () => Promise<string[]>
  redis: Redis
}

/** A key prefix unique to this run, whose keys are deleted on teardown. */
export async function redisNamespace (t: Test, label: string): Promise<RedisNamespace> {
  const url = testRedisUrl()
  const nameSpace = `amrikyy-test:${label}:${randomBytes(6).toString('hex')}:`
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 2000 })
  await redis.connect()
  const keys = async (): Promise<string[]> => (await redis.keys(`${nameSpace}*`)).sort()
  t.teardown(async () => {
    const left = await keys()
    if (left.length > 0) await redis.del(...left)
    await redis.quit()
  })
  return { url, nameSpace, keys, redis }
}
