#!/usr/bin/env node
// amrikyy stream "prompt": streams one answer from the gateway to the terminal.

import { parseArgs } from 'node:util'
import { performance } from 'node:perf_hooks'
import {
  BadRequestError, ForbiddenError, RateLimitedError, StreamError, StreamStartError, UnauthorizedError,
  streamPrompt, type CompletionEvent, type GenerationOptions, type ThoughtEvent
} from './index.js'

/** Documented in the README and in --help: scripts branch on these. */
const EXIT = {
  ok: 0,
  other: 1,
  badRequest: 2,
  auth: 3,
  rateLimited: 4,
  streamStart: 5,
  stream: 6,
  interrupted: 130
} as const

const DEFAULT_URL = 'http://localhost:5000'

const HELP = `Usage: amrikyy stream [options] <prompt>

Streams the gateway's answer to <prompt> to stdout as it arrives ("-" reads the prompt from stdin),
then prints a one-line summary to stderr.

Options:
  --url <url>             gateway base URL (default: $AMRIKYY_URL or ${DEFAULT_URL})
  --model <name>          Gemini model, e.g. gemini-2.5-flash
  --agent <name>          agent label for the gateway's metrics
  --system <text>         system instruction
  --temperature <n>       sampling temperature (0-2)
  --top-p <n>             nucleus sampling (0-1)
  --top-k <n>             top-k sampling (integer >= 1)
  --max-tokens <n>        maxOutputTokens (integer >= 1)
  --thinking-budget <n>   thinking tokens: -1 the model decides, 0 off, or a count (thinking models)
  --thoughts              ask for the model's thought summaries and print them to stderr,
                          between "Thinking..." and "...done thinking.", before the answer
  --json                  print each raw event as one JSON line instead of the text
  --resumable             ask the gateway to keep the stream, so that a dropped connection picks up
                          where it left off (Last-Event-ID) rather than failing; gives up after 3
                          reconnections in a row that bring nothing
  -h, --help              show this help

Environment:
  AMRIKYY_API_KEY         the API key sent as X-API-Key (required)
  AMRIKYY_URL             gateway base URL when --url is not given

Exit codes:
  0  the answer completed
  1  any other failure (gateway unreachable, unexpected answer)
  2  usage error or 400 Bad Request
  3  401 Unauthorized or 403 Forbidden
  4  429 Too Many Requests
  5  500 Failed to start stream
  6  the stream failed after it started (error event or cut connection)
  130 interrupted (Ctrl-C)
`

class UsageError extends Error {}

interface Invocation {
  baseUrl: string
  prompt: string
  model: string | undefined
  agent: string | undefined
  system: string | undefined
  options: GenerationOptions | undefined
  thoughts: boolean
  json: boolean
  resumable: boolean
}

function numberOption (name: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined
  const value = Number(raw)
  if (raw.trim() === '' || !Number.isFinite(value)) throw new UsageError(`--${name} must be a number, got ${JSON.stringify(raw)}`)
  return value
}

async function readStdin (): Promise<string> {
  const pieces: Buffer[] = []
  for await (const piece of process.stdin) pieces.push(piece as Buffer)
  return Buffer.concat(pieces).toString('utf8')
}

async function parseInvocation (argv: string[]): Promise<Invocation | 'help'> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      url: { type: 'string' },
      model: { type: 'string' },
      agent: { type: 'string' },
      system: { type: 'string' },
      temperature: { type: 'string' },
      'top-p': { type: 'string' },
      'top-k': { type: 'string' },
      'max-tokens': { type: 'string' },
      'thinking-budget': { type: 'string' },
      thoughts: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      resumable: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false }
    }
  })
  if (values.help) return 'help'
  const [command, ...words] = positionals
  if (command !== 'stream') throw new UsageError(command === undefined ? 'missing command' : `unknown command ${JSON.stringify(command)}`)
  if (words.length === 0) throw new UsageError('missing prompt')
  const prompt = words.length === 1 && words[0] === '-' ? await readStdin() : words.join(' ')

  const budget = numberOption('thinking-budget', values['thinking-budget'])
  const thinking = budget === undefined && !values.thoughts
    ? undefined
    : { ...(budget === undefined ? {} : { budget }), ...(values.thoughts ? { includeThoughts: true } : {}) }
  const entries = Object.entries({
    temperature: numberOption('temperature', values.temperature),
    topP: numberOption('top-p', values['top-p']),
    topK: numberOption('top-k', values['top-k']),
    maxOutputTokens: numberOption('max-tokens', values['max-tokens']),
    thinking
  }).filter(([, value]) => value !== undefined)
  return {
    baseUrl: values.url ?? process.env.AMRIKYY_URL ?? DEFAULT_URL,
    prompt,
    model: values.model,
    agent: values.agent,
    system: values.system,
    // Typed loosely here on purpose: the gateway checks ranges and integers and names the field.
    options: entries.length === 0 ? undefined : Object.fromEntries(entries) as GenerationOptions,
    thoughts: values.thoughts,
    json: values.json,
    resumable: values.resumable
  }
}

function milliseconds (ms: number | undefined): string {
  return ms === undefined ? '-' : `${Math.round(ms)} ms`
}

function summary (completion: CompletionEvent, firstChunkMs: number | undefined, totalMs: number): string {
  const { usage, model, finishReason } = completion
  const cached = usage?.cachedTokens === undefined ? '' : ` (${usage.cachedTokens} cached)`
  const thinking = usage?.thoughtsTokens === undefined ? '' : `, ${usage.thoughtsTokens} of them thinking`
  const tokens = usage === undefined
    ? 'tokens unknown'
    : `${usage.totalTokens} tokens (${usage.promptTokens} prompt${cached} + ${usage.completionTokens} completion${thinking})`
  // A conversation request's completion says which model answered and how it ended; a seed one does not.
  const ending = (model === undefined ? '' : `, model ${model}`) + (finishReason === undefined ? '' : `, finished ${finishReason}`)
  return `amrikyy: ${completion.totalChunks} chunks, ${tokens}${ending}, first chunk ${milliseconds(firstChunkMs)}, total ${milliseconds(totalMs)}\n`
}

/**
 * Thought summaries on stderr, framed so they read apart from the answer even when both streams share
 * a terminal, and dimmed there; stdout stays the answer alone, ready to pipe.
 */
class ThoughtPrinter {
  private state: 'none' | 'open' | 'closed' = 'none'
  private readonly dim = process.stderr.isTTY && process.env.NO_COLOR === undefined

  print ({ thought }: ThoughtEvent): void {
    if (this.state === 'none') {
      this.state = 'open'
      this.write('Thinking...\n')
    }
    this.write(thought)
  }

  /** Ends the thoughts once the answer (or the end of the stream) arrives. */
  close (): void {
    if (this.state !== 'open') return
    this.state = 'closed'
    this.write('\n...done thinking.\n\n')
  }

  private write (text: string): void {
    process.stderr.write(this.dim ? `\x1b[2m${text}\x1b[22m` : text)
  }
}

function exitCodeFor (error: unknown): number {
  if (error instanceof BadRequestError) return EXIT.badRequest
  if (error instanceof UnauthorizedError || error instanceof ForbiddenError) return EXIT.auth
  if (error instanceof RateLimitedError) return EXIT.rateLimited
  if (error instanceof StreamStartError) return EXIT.streamStart
  if (error instanceof StreamError) return EXIT.stream
  if (error instanceof Error && error.name === 'AbortError') return EXIT.interrupted
  return EXIT.other
}

function describe (error: unknown): string {
  if (!(error instanceof Error)) return String(error)
  let text = `${error.name}: ${error.message}`
  if (error instanceof RateLimitedError && error.retryAfter !== undefined) text += ` (retry after ${error.retryAfter} s)`
  if (error instanceof StreamError && error.blockedCategories !== undefined && error.blockedCategories.length > 0) text += ` [blocked: ${error.blockedCategories.join(', ')}]`
  if (error instanceof StreamError) text += error.recoverable ? ' (recoverable: retrying may succeed)' : ' (not recoverable)'
  return text
}

async function main (argv: string[]): Promise<number> {
  let invocation: Invocation | 'help'
  try {
    invocation = await parseInvocation(argv)
  } catch (error) {
    process.stderr.write(`amrikyy: ${error instanceof Error ? error.message : String(error)}\n\n${HELP}`)
    return EXIT.badRequest
  }
  if (invocation === 'help') {
    process.stdout.write(HELP)
    return EXIT.ok
  }
  const apiKey = process.env.AMRIKYY_API_KEY
  if (apiKey === undefined || apiKey === '') {
    process.stderr.write('amrikyy: set AMRIKYY_API_KEY to your gateway API key\n')
    return EXIT.badRequest
  }

  const controller = new AbortController()
  const interrupt = (): void => { controller.abort(new DOMException('Interrupted', 'AbortError')) }
  process.once('SIGINT', interrupt)
  const started = performance.now()
  let firstChunkMs: number | undefined
  const thoughts = new ThoughtPrinter()
  const onThought = (event: ThoughtEvent): void => {
    if (invocation.json) process.stdout.write(`${JSON.stringify(event)}\n`)
    else thoughts.print(event)
  }
  const stream = streamPrompt({ ...invocation, apiKey, signal: controller.signal, ...(invocation.thoughts ? { onThought } : {}) })
  try {
    for await (const event of stream) {
      firstChunkMs ??= performance.now() - started
      thoughts.close()
      process.stdout.write(invocation.json ? `${JSON.stringify(event)}\n` : event.chunk)
    }
    const completion = await stream.completion
    thoughts.close()
    const totalMs = performance.now() - started
    if (invocation.json) process.stdout.write(`${JSON.stringify(completion)}\n`)
    else if (process.stdout.isTTY) process.stdout.write('\n')
    process.stderr.write(summary(completion, firstChunkMs, totalMs))
    return EXIT.ok
  } catch (error) {
    thoughts.close()
    if (invocation.json && error instanceof StreamError && error.kind === 'error-event') {
      process.stdout.write(`${JSON.stringify(error.body)}\n`)
    } else if (!invocation.json && firstChunkMs !== undefined && process.stdout.isTTY) {
      process.stdout.write('\n')
    }
    process.stderr.write(`amrikyy: ${describe(error)}\n`)
    return exitCodeFor(error)
  } finally {
    process.off('SIGINT', interrupt)
  }
}

process.exitCode = await main(process.argv.slice(2))
