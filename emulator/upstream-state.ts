// What each key and each model is doing: accepted or not, how much quota is left, whether the model is
// overloaded or breaks its streams. Gemini's quotas are per project and per model, so a key (a project)
// and a model each keep their own count, and a key can carry per-model limits of its own.

import type { Fault } from './faults.js'
import { googleError, type GoogleError, invalidKeyError, quotaExhaustedError, serviceDisabledError } from './google-errors.js'

export interface ModelBehaviour {
  /** Answer 503 UNAVAILABLE ("The model is overloaded.") before any byte. */
  unavailable?: boolean
  /** Generation requests served before 429 RESOURCE_EXHAUSTED. */
  quota?: number
  /** The delay the 429's RetryInfo asks for. Default 10. */
  retryDelaySeconds?: number
  /** Streams break after this many events with a 500 INTERNAL error event (the `stream-error` fault). */
  failAfterChunks?: number
}

export interface KeyBehaviour {
  /** Generation requests this key serves (over all models) before 429 RESOURCE_EXHAUSTED. */
  quota?: number
  /** The delay the 429's RetryInfo asks for. Default 10. */
  retryDelaySeconds?: number
  /** Google's answer for a deleted key: 400 API_KEY_INVALID. */
  revoked?: boolean
  /** Google's answer for a key whose project has the API disabled: 403 PERMISSION_DENIED, SERVICE_DISABLED. */
  denied?: boolean
  /** Limits of this key for one model, on top of the key's own and the model's. */
  models?: Record<string, ModelBehaviour>
}

export interface KeyUsage {
  /** Every request that carried the key, refused or not. */
  requests: number
  /** The same, by the model the path names (requests naming none, models.list, are left out). */
  byModel: Record<string, number>
}

export const DEFAULT_RETRY_DELAY_SECONDS = 10

/** A generation's admission: refused with a Google error, or served (with the fault the model state adds, if any). */
export type Admission = { ok: false; error: GoogleError } | { ok: true; fault: Fault | undefined }

interface Counted<B> { behaviour: B; served: number }

export class UpstreamState {
  /** undefined: any non-empty key is accepted. */
  private accepted: Set<string> | undefined
  private keys = new Map<string, Counted<KeyBehaviour> & { models: Map<string, Counted<ModelBehaviour>> }>()
  private models = new Map<string, Counted<ModelBehaviour>>()
  private usage = new Map<string, KeyUsage>()

  constructor (private readonly start: { apiKey?: string; keys?: Record<string, KeyBehaviour>; models?: Record<string, ModelBehaviour> }) {
    this.reset()
  }

  reset (): void {
    const { apiKey, keys, models } = this.start
    this.accepted = apiKey !== undefined || keys !== undefined ? new Set(apiKey === undefined ? [] : [apiKey]) : undefined
    this.keys.clear()
    this.models.clear()
    this.usage.clear()
    for (const [key, behaviour] of Object.entries(keys ?? {})) this.setKey(key, behaviour)
    for (const [model, behaviour] of Object.entries(models ?? {})) this.setModel(model, behaviour)
  }

  /** Replaces the key's behaviour and starts its quota afresh; a key set is accepted. */
  setKey (key: string, behaviour: KeyBehaviour): void {
    validateKeyBehaviour(behaviour, `setKey(${JSON.stringify(key)})`)
    this.accepted?.add(key)
    const models = new Map(Object.entries(behaviour.models ?? {}).map(([m, b]) => [modelId(m), { behaviour: b, served: 0 }]))
    this.keys.set(key, { behaviour, served: 0, models })
  }

  setModel (model: string, behaviour: ModelBehaviour): void {
    validateModelBehaviour(behaviour, `setModel(${JSON.stringify(model)})`)
    this.models.set(modelId(model), { behaviour, served: 0 })
  }

  /** The key's quota, and its per-model quotas, start again from nothing used. */
  refillQuota (key: string): void {
    const state = this.keys.get(key)
    if (!state) return
    state.served = 0
    for (const m of state.models.values()) m.served = 0
  }

  refillModelQuota (model: string): void {
    const state = this.models.get(modelId(model))
    if (state) state.served = 0
  }

  keyUsage (key: string): KeyUsage {
    const usage = this.usage.get(key)
    return { requests: usage?.requests ?? 0, byModel: { ...usage?.byModel } }
  }

  /** Counts the request, then says whether the key is refused (its exact error) or accepted (undefined). */
  checkKey (key: string, model: string | undefined): GoogleError | undefined {
    const usage = this.usage.get(key) ?? { requests: 0, byModel: {} }
    this.usage.set(key, usage)
    usage.requests++
    if (model !== undefined) usage.byModel[model] = (usage.byModel[model] ?? 0) + 1
    if (this.accepted !== undefined && !this.accepted.has(key)) return invalidKeyError()
    const behaviour = this.keys.get(key)?.behaviour
    if (behaviour?.revoked === true) return invalidKeyError()
    if (behaviour?.denied === true) return serviceDisabledError()
    return undefined
  }

  /**
   * A generation request's model state, in order: the key's quota, the key's quota for the model, the
   * model's quota (429s, as Google's quota check comes before the model runs), then the model being
   * overloaded (503). Only a request served uses quota.
   */
  admit (key: string, model: string): Admission {
    const keyState = this.keys.get(key)
    const keyModel = keyState?.models.get(model)
    const modelState = this.models.get(model)
    const limited: Counted<ModelBehaviour | KeyBehaviour>[] = [keyState, keyModel, modelState].filter(s => s !== undefined)
    for (const s of limited) {
      if (s.behaviour.quota !== undefined && s.served >= s.behaviour.quota) {
        return { ok: false, error: quotaExhaustedError(model, s.behaviour.quota, s.behaviour.retryDelaySeconds ?? DEFAULT_RETRY_DELAY_SECONDS) }
      }
    }
    if (keyModel?.behaviour.unavailable === true || modelState?.behaviour.unavailable === true) {
      return { ok: false, error: googleError(503) }
    }
    for (const s of limited) s.served++
    const afterChunks = keyModel?.behaviour.failAfterChunks ?? modelState?.behaviour.failAfterChunks
    return { ok: true, fault: afterChunks === undefined ? undefined : { kind: 'stream-error', afterChunks, code: 500 } }
  }
}

function modelId (name: string): string {
  return name.startsWith('models/') ? name.slice('models/'.length) : name
}

function validateModelBehaviour (b: ModelBehaviour, where: string): void {
  if (typeof b !== 'object' || b === null) throw new TypeError(`${where}: the behaviour must be an object`)
  const count = (name: 'quota' | 'retryDelaySeconds' | 'failAfterChunks'): void => {
    const v = b[name]
    if (v !== undefined && !(Number.isInteger(v) && v >= 0)) throw new RangeError(`${where}: ${name} must be an integer >= 0, got ${String(v)}`)
  }
  count('quota')
  count('retryDelaySeconds')
  count('failAfterChunks')
  if (b.unavailable !== undefined && typeof b.unavailable !== 'boolean') throw new TypeError(`${where}: unavailable must be a boolean`)
}

function validateKeyBehaviour (b: KeyBehaviour, where: string): void {
  validateModelBehaviour({ quota: b.quota, retryDelaySeconds: b.retryDelaySeconds }, where)
  for (const name of ['revoked', 'denied'] as const) {
    if (b[name] !== undefined && typeof b[name] !== 'boolean') throw new TypeError(`${where}: ${name} must be a boolean`)
  }
  for (const [model, mb] of Object.entries(b.models ?? {})) validateModelBehaviour(mb, `${where}.models[${JSON.stringify(model)}]`)
}

export function validateUpstreamOptions (keys: unknown, models: unknown): void {
  for (const [name, value] of [['keys', keys], ['models', models]] as const) {
    if (value !== undefined && (typeof value !== 'object' || value === null || Array.isArray(value))) {
      throw new TypeError(`GeminiEmulator: ${name} must be an object when set`)
    }
  }
  for (const [key, b] of Object.entries((keys ?? {}) as Record<string, KeyBehaviour>)) {
    if (key === '') throw new TypeError('GeminiEmulator: keys must not hold an empty key')
    validateKeyBehaviour(b, `GeminiEmulator: keys[${JSON.stringify(key)}]`)
  }
  for (const [model, b] of Object.entries((models ?? {}) as Record<string, ModelBehaviour>)) {
    validateModelBehaviour(b, `GeminiEmulator: models[${JSON.stringify(model)}]`)
  }
}
