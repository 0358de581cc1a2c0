import { readFile } from 'node:fs/promises'
import { createPrices, type PriceTable } from '../plugins/prices.js'
import { ConfigError } from './config-error.js'
import type { Env } from './env.js'

/** The price table of MODEL_PRICES (JSON) or MODEL_PRICES_FILE (a JSON file), checked; undefined when neither is set. */
export async function loadPrices (env: Pick<Env, 'MODEL_PRICES' | 'MODEL_PRICES_FILE'>): Promise<PriceTable | undefined> {
  if (env.MODEL_PRICES !== undefined && env.MODEL_PRICES_FILE !== undefined) throw new ConfigError('MODEL_PRICES and MODEL_PRICES_FILE are both set: give the price table once')
  let text: string
  let source: string
  if (env.MODEL_PRICES !== undefined) {
    text = env.MODEL_PRICES
    source = 'MODEL_PRICES'
  } else if (env.MODEL_PRICES_FILE !== undefined) {
    source = `MODEL_PRICES_FILE ${env.MODEL_PRICES_FILE}`
    try {
      text = await readFile(env.MODEL_PRICES_FILE, 'utf8')
    } catch (error) {
      throw new ConfigError(`${source}: cannot be read (${(error as NodeJS.ErrnoException).code ?? String(error)})`)
    }
  } else {
    return undefined
  }
  let table: unknown
  try {
    table = JSON.parse(text)
  } catch {
    throw new ConfigError(`${source}: is not valid JSON`)
  }
  try {
    createPrices(table as PriceTable, source)
  } catch (error) {
    throw new ConfigError((error as Error).message)
  }
  return table as PriceTable
}
