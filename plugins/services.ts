// The gateway's plugins decorate an instance under one name, `amrikyy`, instead of claiming `gemini`,
// `lifecycle` and the rest on every host instance. Each plugin adds its part and declares its type
// beside the code that adds it; every part is optional, as it exists only once its plugin ran.

import type { FastifyInstance } from 'fastify'

/** What the gateway's plugins provide; each plugin file adds its own member. */
export interface GatewayServices {}

declare module 'fastify' {
  interface FastifyInstance {
    /** The gateway's services; absent on an instance where none of its plugins was registered. */
    amrikyy?: GatewayServices
  }
}

/**
 * Adds a service to this instance's `amrikyy`. The object is copied, never changed in place: a child
 * context that inherited its parent's services adds to its own copy, so the parent never sees the addition.
 */
export function provide<K extends keyof GatewayServices> (app: FastifyInstance, name: K, service: NonNullable<GatewayServices[K]>): void {
  if (!app.hasDecorator('amrikyy')) {
    app.decorate('amrikyy', { [name]: service })
    return
  }
  app.amrikyy = { ...app.amrikyy, [name]: service }
}

/** A service a plugin depends on; its plugin's `dependencies` make sure it was registered first. */
export function need<K extends keyof GatewayServices> (app: FastifyInstance, name: K, plugin: string): NonNullable<GatewayServices[K]> {
  const service = app.amrikyy?.[name]
  if (service === undefined || service === null) throw new Error(`${plugin} must be registered first: "${name}" is missing`)
  return service
}
