export { createToolHandler, type ToolHandler } from './node-handler.js'
export { registerTools, type RegisterToolsOptions, type RegisteredTools } from './register-tools.js'
export { LaterAnswerError, ToolHost, toAnswer, type AnswerCache, type ContentBlock, type HostedTool, type HostedTools, type HostReply, type LaterAnswer, type ToolAnswer, type ToolCallContext, type ToolHostOptions } from './tool-host.js'
export { ToolSecrets } from './tool-secrets.js'
