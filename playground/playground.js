// The playground's only script: reads the form, streams through the package's own client module,
// and shows the answer as it arrives. The API key lives in the input field and nowhere else:
// nothing here writes to localStorage, sessionStorage or cookies.
import { streamPrompt, RateLimitedError, StreamError } from './client/index.js'

const field = id => document.getElementById(id)
const form = field('request')
const sendButton = field('send')
const stopButton = field('stop')
const status = field('status')
const answer = field('answer')
const thoughtsPanel = field('thoughts-panel')
const thoughts = field('thoughts')

const NUMERIC_OPTIONS = [
  ['temperature', 'temperature'],
  ['top-p', 'topP'],
  ['top-k', 'topK'],
  ['max-tokens', 'maxOutputTokens']
]

/** The stream in flight, so Stop can abort it. */
let running

function setStatus (state, text) {
  status.dataset.state = state
  status.textContent = text
}

function setStat (name, value) {
  field(`stat-${name}`).textContent = value === undefined ? '–' : String(value)
}

function milliseconds (ms) {
  return ms === undefined ? undefined : `${Math.round(ms)} ms`
}

function resetStats () {
  for (const name of ['chunks', 'prompt-tokens', 'completion-tokens', 'total-tokens', 'thoughts-tokens', 'model', 'finish-reason', 'first-chunk', 'total-time']) setStat(name, undefined)
}

function generationOptions () {
  const options = {}
  for (const [id, key] of NUMERIC_OPTIONS) {
    const raw = field(id).value.trim()
    if (raw !== '') options[key] = Number(raw)
  }
  if (field('show-thoughts').checked) options.thinking = { includeThoughts: true }
  return Object.keys(options).length === 0 ? undefined : options
}

function describe (error) {
  if (error instanceof RateLimitedError && error.retryAfter !== undefined) return `${error.name}: ${error.message} Retry in ${error.retryAfter} s.`
  if (error instanceof StreamError) {
    const blocked = error.blockedCategories?.length > 0 ? ` (blocked: ${error.blockedCategories.join(', ')})` : ''
    return `${error.name}: ${error.message}${error.recoverable ? ' (retrying may succeed)' : ''}${blocked}`
  }
  return `${error.name}: ${error.message}`
}

async function send () {
  const controller = new AbortController()
  running = controller
  sendButton.disabled = true
  stopButton.disabled = false
  answer.textContent = ''
  thoughts.textContent = ''
  thoughtsPanel.hidden = true
  resetStats()
  setStatus('waiting', 'Waiting for the first chunk…')

  const started = performance.now()
  let firstChunkMs
  let chunks = 0
  const system = field('system').value
  const stream = streamPrompt({
    baseUrl: window.location.origin,
    apiKey: field('api-key').value,
    prompt: field('prompt').value,
    model: field('model').value.trim() || undefined,
    system: system.trim() === '' ? undefined : system,
    agent: field('agent').value.trim() || undefined,
    options: generationOptions(),
    resumable: field('resumable').checked,
    // Thoughts go to their own box, never into the answer.
    onThought: ({ thought }) => {
      thoughtsPanel.hidden = false
      thoughts.append(thought)
      setStatus('thinking', 'Thinking…')
    },
    signal: controller.signal
  })
  try {
    for await (const { chunk } of stream) {
      if (firstChunkMs === undefined) {
        firstChunkMs = performance.now() - started
        setStat('first-chunk', milliseconds(firstChunkMs))
        setStatus('streaming', 'Streaming…')
      }
      chunks++
      answer.append(chunk)
      setStat('chunks', chunks)
    }
    const completion = await stream.completion
    setStat('chunks', completion.totalChunks)
    setStat('prompt-tokens', completion.usage?.promptTokens)
    setStat('completion-tokens', completion.usage?.completionTokens)
    setStat('total-tokens', completion.usage?.totalTokens)
    setStat('thoughts-tokens', completion.usage?.thoughtsTokens)
    setStat('model', completion.model)
    setStat('finish-reason', completion.finishReason)
    setStat('total-time', milliseconds(performance.now() - started))
    setStatus('completed', 'Completed.')
  } catch (error) {
    setStat('total-time', milliseconds(performance.now() - started))
    if (error instanceof StreamError) setStat('finish-reason', error.finishReason)
    if (error?.name === 'AbortError') setStatus('stopped', `Stopped after ${chunks} chunk${chunks === 1 ? '' : 's'}.`)
    else setStatus('error', describe(error))
  } finally {
    running = undefined
    sendButton.disabled = false
    stopButton.disabled = true
  }
}

form.addEventListener('submit', event => {
  event.preventDefault()
  if (running === undefined) send()
})

stopButton.addEventListener('click', () => {
  running?.abort(new DOMException('Stopped from the playground', 'AbortError'))
})
