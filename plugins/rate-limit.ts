import fp from 'fastify-plugin'
import rateLimit from '@fastify/rate-limit'
import type { FastifyInstance } from 'fastify'
import { AppError } from '../src/errors.js'

/**
 * Requests per minute let in by a run's signed timeline links, whichever of its links: a tab
 * open on a live run reloads the page every 2 s, 30 a minute, so this is two tabs' worth.
 */
const LINK_REQUESTS_PER_MINUTE = 60

/**
 * Requests per tenant per minute (RATE_LIMIT_PER_MINUTE; 0 turns it off), with @fastify/rate-limit
 * counting in this process's memory: each replica counts its own, so N replicas let a tenant make
 * up to N times the limit.
 *
 * The count is taken in `preParsing`, after the route's `onRequest` authentication and before the
 * body is read. It is keyed by the tenant the key belongs to, never by the key itself, so a request
 * with a wrong key (answered 401 before it gets here) cannot spend a tenant's budget. A request let
 * in by a signed timeline link is counted apart, per run, against a small budget of its own
 * (LINK_REQUESTS_PER_MINUTE, or the tenant's limit if lower): whoever holds a link (a browser tab
 * refreshing, or a link that leaked) can neither spend the tenant's budget nor make more requests
 * than a few open tabs would. Routes that need no key (/healthz, /readyz, /docs, /openapi.json and
 * the like) leave `tenantId` empty and are not counted.
 */
export default fp(async function rateLimitPlugin (app: FastifyInstance) {
  const perMinute = app.config.RATE_LIMIT_PER_MINUTE
  if (perMinute === 0) return
  const perLink = Math.min(perMinute, LINK_REQUESTS_PER_MINUTE)
  await app.register(rateLimit, {
    global: true,
    max: (request) => request.linkRunId !== '' ? perLink : perMinute,
    timeWindow: 60_000,
    hook: 'preParsing',
    keyGenerator: (request) => request.linkRunId !== '' ? `link:${request.linkRunId}` : request.tenantId,
    allowList: (request) => request.tenantId === '',
    // Sets retry-after and x-ratelimit-* first; the error handler answers in the error shape.
    errorResponseBuilder: (request, context) => {
      const retryAfter = Math.max(1, Math.ceil(context.ttl / 1000))
      return new AppError('REQUEST_ERR_RATE_LIMITED', request.linkRunId !== ''
        ? `Too many requests through this run's timeline links: they may open its page ${context.max} times per minute on each replica, apart from the tenant's own budget. Retry after ${retryAfter} s (the retry-after header), or close some of the tabs that show it.`
        : `Too many requests: this tenant may make ${context.max} per minute on each replica (RATE_LIMIT_PER_MINUTE). Retry after ${retryAfter} s (the retry-after header), and spread requests out.`)
    }
  })
}, { name: 'rate-limit', dependencies: ['config', 'auth', 'error-handler'] })
