import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { commonErrors, DeletedSchema, ListOf, PageQuerySchema } from '../../src/schemas/common.js'
import { McpServerDefinitionSchema, McpServerNameSchema, McpServerSchema } from '../../src/schemas/mcp-servers.js'
import { toMcpServerObject } from '../../src/tools/mcp/index.js'

const NameParams = Type.Object({ name: McpServerNameSchema })
const errors = { ...commonErrors, 404: Type.Ref('Error'), 409: Type.Ref('Error') }

/** MCP servers as a tool source: SPEC §11. */
export default async function mcpServerRoutes (fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  app.addHook('onRequest', app.authenticate)

  app.put('/mcp-servers/:name', {
    schema: {
      operationId: 'putMcpServer',
      tags: ['mcp-servers'],
      summary: 'Register or replace an MCP server',
      description: 'Connects, initializes and lists the server\'s tools before answering: 201 on a create, 200 on a replace, with the tools runs may use. A server that cannot be reached or fails the handshake is a 400 MCP_ERR_UNREACHABLE, and nothing is stored. Headers and the OAuth client secret are write-only.',
      params: NameParams,
      body: McpServerDefinitionSchema,
      response: { 200: McpServerSchema, 201: McpServerSchema, ...errors }
    }
  }, async (request, reply) => {
    const { server, created } = await app.mcp.registry.put(request.tenantId, request.params.name, request.body)
    request.log.info({ mcpServer: server.name, tools: server.listed.length }, created ? 'MCP server registered' : 'MCP server replaced')
    return reply.code(created ? 201 : 200).send(toMcpServerObject(server))
  })

  app.get('/mcp-servers', {
    schema: {
      operationId: 'listMcpServers',
      tags: ['mcp-servers'],
      summary: 'List MCP servers, newest first',
      querystring: PageQuerySchema,
      response: { 200: ListOf(McpServerSchema, 'McpServerList'), ...errors }
    }
  }, async (request) => {
    const page = await app.mcp.registry.list(request.tenantId, { limit: request.query.limit, after: request.query.after })
    return { object: 'list' as const, data: page.items.map(toMcpServerObject), has_more: page.nextCursor !== null, next_cursor: page.nextCursor }
  })

  app.get('/mcp-servers/:name', {
    schema: { operationId: 'getMcpServer', tags: ['mcp-servers'], summary: 'Read an MCP server and its tools', params: NameParams, response: { 200: McpServerSchema, ...errors } }
  }, async (request) => toMcpServerObject(await app.mcp.registry.get(request.tenantId, request.params.name)))

  app.delete('/mcp-servers/:name', {
    schema: { operationId: 'deleteMcpServer', tags: ['mcp-servers'], summary: 'Remove an MCP server', description: 'Runs already started keep its tools\' definitions; their calls then fail as is_error results.', params: NameParams, response: { 200: DeletedSchema('mcp_server'), ...errors } }
  }, async (request) => {
    await app.mcp.registry.delete(request.tenantId, request.params.name)
    request.log.info({ mcpServer: request.params.name }, 'MCP server deleted')
    return { id: request.params.name, object: 'mcp_server' as const, deleted: true as const }
  })

  app.post('/mcp-servers/:name/refresh', {
    schema: {
      operationId: 'refreshMcpServer',
      tags: ['mcp-servers'],
      summary: 'List an MCP server\'s tools again',
      description: 'Runs started from now on offer the new list; runs already started keep theirs.',
      params: NameParams,
      response: { 200: McpServerSchema, ...errors }
    }
  }, async (request) => {
    const server = await app.mcp.registry.refresh(request.tenantId, request.params.name)
    request.log.info({ mcpServer: server.name, tools: server.listed.length }, 'MCP server listed again')
    return toMcpServerObject(server)
  })
}
