// Google-style error bodies: {"error":{"code","message","status"[,"details"]}}.

import { STATUS_CODES } from 'node:http'

const KNOWN: Record<number, { status: string; message: string }> = {
  400: { status: 'INVALID_ARGUMENT', message: 'Request contains an invalid argument.' },
  401: { status: 'UNAUTHENTICATED', message: 'Request had invalid authentication credentials.' },
  403: { status: 'PERMISSION_DENIED', message: 'The caller does not have permission' },
  404: { status: 'NOT_FOUND', message: 'Requested entity was not found.' },
  409: { status: 'ABORTED', message: 'The operation was aborted.' },
  429: { status: 'RESOURCE_EXHAUSTED', message: 'Resource has been exhausted (e.g. check quota).' },
  499: { status: 'CANCELLED', message: 'The operation was cancelled.' },
  500: { status: 'INTERNAL', message: 'An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting' },
  501: { status: 'UNIMPLEMENTED', message: 'Operation is not implemented, or supported, or enabled.' },
  503: { status: 'UNAVAILABLE', message: 'The model is overloaded. Please try again later.' },
  504: { status: 'DEADLINE_EXCEEDED', message: 'Deadline expired before operation could complete.' }
}

/** The google.rpc status name Google pairs with an HTTP code. */
export function googleStatusFor (code: number): string {
  const known = KNOWN[code]
  if (known) return known.status
  if (code >= 400 && code < 500) return 'INVALID_ARGUMENT'
  if (code >= 500 && code < 600) return 'INTERNAL'
  return 'UNKNOWN'
}

export function googleMessageFor (code: number): string {
  return KNOWN[code]?.message ?? STATUS_CODES[code] ?? `HTTP ${code}`
}

export interface GoogleError {
  error: { code: number; message: string; status: string; details?: unknown[] }
}

export function googleError (code: number, message?: string, status?: string, details?: unknown[]): GoogleError {
  const error: GoogleError['error'] = {
    code,
    message: message ?? googleMessageFor(code),
    status: status ?? googleStatusFor(code)
  }
  if (details) error.details = details
  return { error }
}

/** What Google answers a request that carries no API key: 403. */
export function missingKeyError (): GoogleError {
  return googleError(403, 'Method doesn\'t allow unregistered callers (callers without established identity). ' +
    'Please use API Key or other form of API consumer identity to call this API.')
}

/** What Google answers a key it does not know: 400 with the API_KEY_INVALID reason in its details. */
export function invalidKeyError (): GoogleError {
  const message = 'API key not valid. Please pass a valid API key.'
  return googleError(400, message, 'INVALID_ARGUMENT', [
    {
      '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
      reason: 'API_KEY_INVALID',
      domain: 'googleapis.com',
      metadata: { service: 'generativelanguage.googleapis.com' }
    },
    { '@type': 'type.googleapis.com/google.rpc.LocalizedMessage', locale: 'en-US', message }
  ])
}

/** The project number of the emulator's keys, in the bodies that name a project. */
const PROJECT = '000000000000'

/**
 * What Google answers a key whose project has the Generative Language API disabled: 403 with the
 * SERVICE_DISABLED reason (google-gemini/deprecated-generative-ai-python#10; docs/gemini-wire-protocol.md §16).
 */
export function serviceDisabledError (): GoogleError {
  const url = `https://console.developers.google.com/apis/api/generativelanguage.googleapis.com/overview?project=${PROJECT}`
  return googleError(403, `Generative Language API has not been used in project ${PROJECT} before or it is disabled. ` +
    `Enable it by visiting ${url} then retry. If you enabled this API recently, wait a few minutes for the action to ` +
    'propagate to our systems and retry.', 'PERMISSION_DENIED', [
    {
      '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
      reason: 'SERVICE_DISABLED',
      domain: 'googleapis.com',
      metadata: { consumer: `projects/${PROJECT}`, service: 'generativelanguage.googleapis.com' }
    },
    { '@type': 'type.googleapis.com/google.rpc.Help', links: [{ description: 'Google developers console API activation', url }] }
  ])
}

/**
 * What Gemini answers past a quota: 429 with the violated quota, a link, and the RetryInfo delay a client
 * should wait (docs/gemini-wire-protocol.md §16).
 */
export function quotaExhaustedError (model: string, quota: number, retryDelaySeconds: number): GoogleError {
  const help = 'https://ai.google.dev/gemini-api/docs/rate-limits'
  return googleError(429, 'You exceeded your current quota, please check your plan and billing details. ' +
    `For more information on this error, head to: ${help}.`, 'RESOURCE_EXHAUSTED', [
    {
      '@type': 'type.googleapis.com/google.rpc.QuotaFailure',
      violations: [{
        quotaMetric: 'generativelanguage.googleapis.com/generate_content_free_tier_requests',
        quotaId: 'GenerateRequestsPerMinutePerProjectPerModel-FreeTier',
        quotaDimensions: { location: 'global', model },
        quotaValue: String(quota)
      }]
    },
    { '@type': 'type.googleapis.com/google.rpc.Help', links: [{ description: 'Learn more about Gemini API quotas', url: help }] },
    { '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: `${retryDelaySeconds}s` }
  ])
}

/**
 * What Google answers a generation or token count for a model it does not serve: 404 NOT_FOUND naming the
 * model, the path's API version and the method (live transcripts; see docs/gemini-wire-protocol.md §5).
 */
export function modelNotFoundError (model: string, apiVersion: string, rpc: string): GoogleError {
  const name = model.startsWith('tunedModels/') ? model : `models/${model}`
  return googleError(404, `${name} is not found for API version ${apiVersion}, or is not supported for ${rpcWording(rpc)}. ` +
    'Call ListModels to see the list of available models and their supported methods.')
}

/** Google names the streaming method with a capital letter in this message, the others as in the path. */
function rpcWording (rpc: string): string {
  return rpc === 'streamGenerateContent' ? 'StreamGenerateContent' : rpc
}
