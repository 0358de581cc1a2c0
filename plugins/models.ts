// Which models callers may use, and under which names: an allow-list of names and `*` patterns, aliases
// that map a requested name to the model called, and Gemini's model list as callers may see it (cached).

import fp from 'fastify-plugin'
import type { GeminiClient, ModelInfo } from '../gemini/types.js'
import { UpstreamError } from '../gemini/upstream-error.js'
import { modelId } from '../gemini/model-id.js'
import { refusals, type Refusal } from '../schemas/refusals.js'
import type { ListedModel } from '../schemas/models.js'
import { need, provide } from './services.js'
import type { Caller } from './auth.js'
// The Gemini client plugin declares the `gemini` service this plugin reads.
import type {} from './gemini-client.js'

export interface ModelsOptions {
  /**
   * The models callers may name: ids or `*` patterns (`gemini-2.5-*`); a `models/` prefix is ignored. Unset:
   * every model, as before. An alias's name is allowed whenever its target is.
   */
  allowedModels?: readonly string[] | undefined
  /** Requested name → the model called instead (`{ 'gemini-2.0-flash-exp': 'gemini-2.5-flash' }`). */
  aliases?: Readonly<Record<string, string>> | undefined
  /** How long Gemini's model list is kept. Default 5 minutes. */
  listTtlMs?: number | undefined
}

export type ModelChoice = { model: string, refusal?: undefined } | { model?: undefined, refusal: Refusal }

/** What callers may use, from the options alone: no Gemini call. */
export interface ModelPolicy {
  /** The alias's target, or the name itself; then the allow-list: the model to call, or the refusal. */
  resolve: (requested: string) => ModelChoice
  /** Whether a model id (without `models/`) is on the allow-list. */
  allows: (id: string) => boolean
  /** Whether the options name an allow-list or an alias at all. */
  readonly configured: boolean
  readonly aliases: ReadonlyMap<string, string>
  /** The allow-list's entries without a `*`. */
  readonly allowedNames: readonly string[]
}

export interface GatewayModels extends ModelPolicy {
  /** As `resolve`, then the caller's own `models` policy, which can only narrow what the gateway allows. */
  resolveFor: (requested: string, caller: Caller | null) => ModelChoice
  /** Whether a model id is on the allow-list and, for a caller, within its key's `models`. */
  allowsFor: (caller: Caller | null) => (id: string) => boolean
  /** Gemini's models the caller may use, then the aliases; Gemini is asked at most once per TTL. */
  list: (signal: AbortSignal, caller?: Caller | null) => Promise<ListedModel[]>
}

declare module './services.js' {
  interface GatewayServices {
    models?: GatewayModels
  }
}

export const DEFAULT_LIST_TTL_MS = 5 * 60_000
/** The longest the shared fetch of the list may take, whoever waits for it. */
const LIST_FETCH_TIMEOUT_MS = 30_000
/** A model name as a request may give it (schemas/stream.ts), with `*` allowed in an allow-list pattern. */
const NAME_RE = /^(models\/)?[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}$/
const PATTERN_RE = /^(models\/)?[a-zA-Z0-9*][a-zA-Z0-9.*_-]{0,127}$/

export { modelId }

export function isModelName (name: string): boolean {
  return NAME_RE.test(name) && !name.includes('..')
}

export function isModelPattern (pattern: string): boolean {
  return PATTERN_RE.test(pattern) && !pattern.includes('..')
}

function patternRegExp (pattern: string): RegExp {
  const source = modelId(pattern).split('*').map(part => part.replace(/[.]/g, '\\.')).join('.*')
  return new RegExp(`^${source}$`)
}

/** Whether a model id (without `models/`) matches any of these names or `*` patterns (checked by isModelPattern). */
export function modelMatcher (patterns: readonly string[]): (id: string) => boolean {
  const compiled = patterns.map(patternRegExp)
  return id => compiled.some(pattern => pattern.test(id))
}

/** The policy of these options; a bad option is an Error naming it. */
export function createModelPolicy (options: Pick<ModelsOptions, 'allowedModels' | 'aliases'> = {}): ModelPolicy {
  const { allowedModels, aliases = {} } = options
  if (allowedModels !== undefined) {
    if (!Array.isArray(allowedModels) || allowedModels.length === 0) throw new Error('models: option "allowedModels" must be a non-empty array of model names or patterns')
    const bad = allowedModels.find(entry => typeof entry !== 'string' || !isModelPattern(entry))
    if (bad !== undefined) throw new Error(`models: option "allowedModels" has an entry that is not a model name or * pattern: ${JSON.stringify(bad)}`)
  }
  if (typeof aliases !== 'object' || aliases === null || Array.isArray(aliases)) throw new Error('models: option "aliases" must be an object of model names')
  const matches = modelMatcher(allowedModels ?? [])
  const allows = (id: string): boolean => allowedModels === undefined || matches(id)
  const aliasMap = new Map<string, string>()
  for (const [name, target] of Object.entries(aliases)) {
    if (!isModelName(name) || typeof target !== 'string' || !isModelName(target)) {
      throw new Error(`models: option "aliases" must map model names to model names: ${JSON.stringify(name)}`)
    }
    if (!allows(modelId(target))) throw new Error(`models: alias ${modelId(name)} points to ${modelId(target)}, which "allowedModels" does not allow`)
    aliasMap.set(modelId(name), modelId(target))
  }
  return {
    configured: allowedModels !== undefined || aliasMap.size > 0,
    aliases: aliasMap,
    allowedNames: (allowedModels ?? []).filter(entry => !entry.includes('*')).map(modelId),
    allows,
    resolve (requested) {
      const target = aliasMap.get(modelId(requested))
      if (target !== undefined) return { model: target }
      // The name goes to Gemini as the caller wrote it, `models/` prefix and all, as it always has.
      return allows(modelId(requested)) ? { model: requested } : { refusal: refusals.modelNotAllowed(modelId(requested)) }
    }
  }
}

/**
 * The model label allow-list of the metrics: the resolved default model, the aliases' targets, the allow-list's
 * names and `known` (the configured or built-in label list), keeping only what the policy allows. With neither
 * allow-list nor aliases it is `[defaultModel, ...known]`, as it always was.
 */
export function labelledModels (policy: ModelPolicy, defaultModel: string, known: readonly string[]): string[] {
  if (!policy.configured) return [defaultModel, ...known]
  const candidates = [policy.resolve(defaultModel).model ?? defaultModel, ...policy.aliases.values(), ...policy.allowedNames, ...known]
  return [...new Set(candidates.map(modelId))].filter(id => policy.allows(id))
}

function listedModel (model: ModelInfo, id = model.id, aliasOf?: string): ListedModel {
  return {
    id,
    ...(aliasOf === undefined ? {} : { aliasOf }),
    ...(model.displayName === undefined ? {} : { displayName: model.displayName }),
    ...(model.description === undefined ? {} : { description: model.description }),
    ...(model.inputTokenLimit === undefined ? {} : { inputTokenLimit: model.inputTokenLimit }),
    ...(model.outputTokenLimit === undefined ? {} : { outputTokenLimit: model.outputTokenLimit }),
    ...(model.thinking === undefined ? {} : { thinking: model.thinking })
  }
}

/** What a caller may use of Gemini's list: models that generate and are allowed, then every alias. */
export function visibleModels (policy: ModelPolicy, gemini: readonly ModelInfo[]): ListedModel[] {
  const generating = gemini.filter(model => model.supportedActions === undefined || model.supportedActions.includes('generateContent'))
  // A name taken by an alias calls its target: Gemini's model of that name is out of reach.
  const own = generating.filter(model => policy.allows(model.id) && !policy.aliases.has(model.id)).map(model => listedModel(model))
  const byId = new Map(gemini.map(model => [model.id, model]))
  const aliases = [...policy.aliases].map(([name, target]) => listedModel(byId.get(target) ?? { id: target }, name, target))
  return [...own, ...aliases]
}

/** Waits for `promise` unless `signal` aborts first; the promise itself runs on for whoever else waits. */
async function unlessAborted<T> (promise: Promise<T>, signal: AbortSignal): Promise<T> {
  const { promise: aborted, reject } = Promise.withResolvers<never>()
  const onAbort = (): void => { reject(new UpstreamError('aborted', 'Gemini request was aborted')) }
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    return await Promise.race([promise, aborted])
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}

/** Gemini's list, kept for `ttlMs`; callers that arrive while it is fetched share that one fetch, and a failure is not kept. */
export function cachedModelList (gemini: GeminiClient, ttlMs: number, closing: AbortSignal): (signal: AbortSignal) => Promise<ModelInfo[]> {
  let cached: { models: ModelInfo[], until: number } | undefined
  let inFlight: Promise<ModelInfo[]> | undefined
  return async signal => {
    if (cached !== undefined && Date.now() < cached.until) return cached.models
    // Before the fetch starts: a fetch nobody waits for would fail unheard.
    if (signal.aborted) throw new UpstreamError('aborted', 'Gemini request was aborted')
    const { listModels } = gemini
    if (listModels === undefined) throw new UpstreamError('invalid_request', 'The Gemini client cannot list models')
    inFlight ??= listModels(AbortSignal.any([closing, AbortSignal.timeout(LIST_FETCH_TIMEOUT_MS)])).then(models => {
      cached = { models, until: Date.now() + ttlMs }
      return models
    }).finally(() => { inFlight = undefined })
    return await unlessAborted(inFlight, signal)
  }
}

export default fp<ModelsOptions>(async function modelsPlugin (app, options) {
  const policy = createModelPolicy(options)
  const ttlMs = options.listTtlMs ?? DEFAULT_LIST_TTL_MS
  if (!(Number.isInteger(ttlMs) && ttlMs >= 0)) throw new Error('models: option "listTtlMs" must be an integer >= 0')
  const closing = new AbortController()
  app.addHook('onClose', async () => { closing.abort() })
  const fetchList = cachedModelList(need(app, 'gemini', 'amrikyy-gemini-client'), ttlMs, closing.signal)
  provide(app, 'models', {
    ...policy,
    allowsFor (caller) {
      return caller === null ? policy.allows : id => policy.allows(id) && caller.allowsModel(id)
    },
    resolveFor (requested, caller) {
      const choice = policy.resolve(requested)
      if (choice.refusal !== undefined || caller === null || caller.allowsModel(modelId(choice.model))) return choice
      return { refusal: refusals.modelNotAllowed(modelId(requested)) }
    },
    async list (signal, caller) {
      const visible = visibleModels(policy, await fetchList(signal))
      return caller == null ? visible : visible.filter(model => caller.allowsModel(model.aliasOf ?? model.id))
    }
  })
}, { name: 'amrikyy-models', fastify: '5.x', dependencies: ['amrikyy-gemini-client'] })
