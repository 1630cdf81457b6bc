#!/usr/bin/env node
// Exercise @modelcontextprotocol/server-everything through gateway replicas with the TS SDK client:
// every listed tool with valid arguments, every resource and template, every prompt, completions,
// subscriptions, the long-running operation with progress, and server -> client requests
// (sampling, form and URL elicitation, roots) answered by the client through a DIFFERENT replica
// than the one streaming the tools/call.
//
//   node interop/everything_client.mjs STREAM_URL ANSWER_URL [OTHER_URL]
//
// STREAM_URL gets initialize and every client request (so each tools/call SSE stream comes from it),
// ANSWER_URL gets every POST that carries only JSON-RPC responses (the answers to sampling and
// elicitation), OTHER_URL (default STREAM_URL) the standalone GET stream. All three are replicas
// of one gateway cluster sharing Redis. Prints one JSON line; exit status 0 only if all held.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import {
  CallToolResultSchema,
  CreateMessageRequestSchema,
  CreateTaskResultSchema,
  GetTaskPayloadResultSchema,
  GetTaskResultSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
} from '@modelcontextprotocol/sdk/types.js';

const [streamUrl, answerUrl, otherUrl = streamUrl] = process.argv.slice(2);
if (!streamUrl || !answerUrl) {
  console.error('usage: everything_client.mjs STREAM_URL ANSWER_URL [OTHER_URL]');
  process.exit(2);
}

const routed = { stream: 0, answer: 0, other: 0, answerStatuses: [] };
function isOnlyResponses(body) {
  if (typeof body !== 'string') return false;
  try {
    const parsed = JSON.parse(body);
    const msgs = Array.isArray(parsed) ? parsed : [parsed];
    return msgs.every((m) => m && m.method === undefined && m.id !== undefined && ('result' in m || 'error' in m));
  } catch {
    return false;
  }
}
async function routingFetch(input, init = {}) {
  const method = (init.method || 'GET').toUpperCase();
  let target = streamUrl;
  let lane = 'stream';
  if (method === 'POST' && isOnlyResponses(init.body)) [target, lane] = [answerUrl, 'answer'];
  else if (method === 'GET') [target, lane] = [otherUrl, 'other'];
  routed[lane] += 1;
  const response = await fetch(target, init);
  if (lane === 'answer') routed.answerStatuses.push(response.status);
  return response;
}

const serverRequests = { sampling: 0, elicitForm: 0, elicitUrl: 0, roots: 0 };
const client = new Client(
  { name: 'interop-everything-client', version: '1.0.0' },
  { capabilities: { sampling: {}, elicitation: { form: {}, url: {} }, roots: { listChanged: true } } },
);
client.setRequestHandler(CreateMessageRequestSchema, async (req) => {
  serverRequests.sampling += 1;
  const asked = req.params.messages.map((m) => m.content?.text ?? '').join(' ');
  return { model: 'interop-fake-llm', role: 'assistant', content: { type: 'text', text: `fake answer to: ${asked}` } };
});
client.setRequestHandler(ElicitRequestSchema, async (req) => {
  if (req.params.mode === 'url') {
    serverRequests.elicitUrl += 1;
    return { action: 'accept' };
  }
  serverRequests.elicitForm += 1;
  const schema = req.params.requestedSchema || { properties: {} };
  const content = {};
  for (const [key, prop] of Object.entries(schema.properties || {})) content[key] = sampleValue(prop, key);
  return { action: 'accept', content };
});
client.setRequestHandler(ListRootsRequestSchema, async () => {
  serverRequests.roots += 1;
  return { roots: [{ uri: 'file:///tmp/interop', name: 'interop' }] };
});

function sampleValue(prop = {}, key = '') {
  if (prop.default !== undefined) return prop.default;
  if (prop.const !== undefined) return prop.const;
  if (Array.isArray(prop.enum)) return prop.enum[0];
  if (Array.isArray(prop.oneOf) && prop.oneOf[0]?.const !== undefined) return prop.oneOf[0].const;
  if (Array.isArray(prop.anyOf) && prop.anyOf[0]?.const !== undefined) return prop.anyOf[0].const;
  switch (prop.type) {
    case 'number':
      return prop.minimum ?? 2;
    case 'integer':
      return prop.minimum ?? 1;
    case 'boolean':
      return true;
    case 'array': {
      const item = prop.items?.enum?.[0] ?? prop.items?.anyOf?.[0]?.const ?? 'x';
      return [item];
    }
    case 'object':
      return {};
    default:
      if (prop.format === 'email') return 'interop@example.com';
      if (prop.format === 'uri' || prop.format === 'url' || /url|uri/i.test(key)) return 'https://example.com/interop';
      if (prop.format === 'date') return '2026-01-02';
      if (prop.format === 'date-time') return '2026-01-02T03:04:05Z';
      return 'interop';
  }
}
function argsFor(tool) {
  const overrides = {
    'trigger-long-running-operation': { duration: 2, steps: 4 },
    'gzip-file-as-resource': { name: 'interop.txt.gz', data: 'data:text/plain;base64,aW50ZXJvcA==' },
    'get-resource-reference': { resourceType: 'Text', resourceId: 1 },
    'get-resource-links': { count: 3 },
    'simulate-research-query': { topic: 'interop', ambiguous: true },
    'trigger-url-elicitation': { url: 'https://example.com/interop', elicitationId: 'interop-1' },
  };
  if (overrides[tool.name]) return overrides[tool.name];
  const args = {};
  const schema = tool.inputSchema || {};
  for (const key of schema.required || []) args[key] = sampleValue(schema.properties?.[key], key);
  return args;
}

// SEP-1686 task-augmented call: tools/call with `task`, poll tasks/get, then tasks/result.
async function callAsTask(name, args) {
  const created = await client.request(
    { method: 'tools/call', params: { name, arguments: args, task: { ttl: 60000 } } },
    CreateTaskResultSchema,
  );
  const taskId = created.task.taskId;
  let status = created.task.status;
  const seen = [status];
  for (let i = 0; i < 60 && !['completed', 'failed', 'cancelled', 'input_required'].includes(status); i++) {
    await new Promise((r) => setTimeout(r, 500));
    status = (await client.request({ method: 'tasks/get', params: { taskId } }, GetTaskResultSchema)).status;
    seen.push(status);
  }
  if (status === 'failed' || status === 'cancelled') throw new Error(`task ${taskId} ended ${status}`);
  // input_required: tasks/result carries the server's elicitation request on its stream and then the result.
  const payload = await client.request({ method: 'tasks/result', params: { taskId } }, GetTaskPayloadResultSchema, {
    timeout: 30000,
  });
  report.taskStatuses = [...new Set(seen)];
  if (payload.isError) throw new Error(`task result isError: ${JSON.stringify(payload.content).slice(0, 200)}`);
  return 'ok (task)';
}

const report = { tools: {}, resources: {}, prompts: {}, progress: [], failures: [] };
const fail = (what, err) => report.failures.push(`${what}: ${err && err.message ? err.message : err}`);
const deadline = setTimeout(() => {
  console.log(JSON.stringify({ ok: false, reason: 'timeout', report, routed, serverRequests }));
  process.exit(1);
}, 110000);

const transport = new StreamableHTTPClientTransport(new URL(streamUrl), { fetch: routingFetch });
try {
  await client.connect(transport);
  const info = client.getServerVersion();

  // ---- tools: every listed tool with valid arguments
  const tools = (await client.listTools()).tools;
  // Task-augmented demos need the client to run tasks itself (tasks.requests.*): not declared, not listed.
  for (const tool of tools) {
    const args = argsFor(tool);
    const opts = { timeout: 30000 };
    if (tool.name === 'trigger-long-running-operation') {
      opts.onprogress = (p) => report.progress.push(p.progress);
      opts.resetTimeoutOnProgress = true;
    }
    try {
      if (tool.execution?.taskSupport === 'required') {
        report.tools[tool.name] = await callAsTask(tool.name, args);
        continue;
      }
      const res = await client.request({ method: 'tools/call', params: { name: tool.name, arguments: args } }, CallToolResultSchema, opts);
      report.tools[tool.name] = res.isError ? `isError: ${JSON.stringify(res.content).slice(0, 120)}` : 'ok';
      if (res.isError) fail(`tool ${tool.name}`, JSON.stringify(res.content).slice(0, 200));
    } catch (err) {
      report.tools[tool.name] = `error: ${err.message}`;
      fail(`tool ${tool.name}`, err);
    }
  }

  // ---- resources: every page of resources/list, read each; templates
  let cursor;
  const uris = [];
  do {
    const page = await client.listResources(cursor ? { cursor } : {});
    uris.push(...page.resources.map((r) => r.uri));
    cursor = page.nextCursor;
  } while (cursor && uris.length < 500);
  for (const uri of uris) {
    try {
      const res = await client.readResource({ uri });
      report.resources[uri] = res.contents.length ? 'ok' : 'empty';
    } catch (err) {
      report.resources[uri] = `error: ${err.message}`;
      fail(`resource ${uri}`, err);
    }
  }
  const templates = (await client.listResourceTemplates()).resourceTemplates.map((t) => t.uriTemplate);
  for (const tpl of templates) {
    const uri = tpl.replace(/\{[^}]+\}/g, '1');
    try {
      const res = await client.readResource({ uri });
      report.resources[uri] = res.contents.length ? 'ok (template)' : 'empty';
    } catch (err) {
      report.resources[uri] = `error: ${err.message}`;
      // session-scoped templates only resolve names registered by gzip-file-as-resource
      if (!/session/.test(tpl)) fail(`template ${tpl}`, err);
    }
  }
  if (uris.length) {
    await client.subscribeResource({ uri: uris[0] });
    await client.unsubscribeResource({ uri: uris[0] });
  }

  // ---- prompts: every prompt, with arguments from its declaration
  const promptArgs = {
    'args-prompt': { city: 'Paris', state: 'TX' },
    'completable-prompt': { department: 'Engineering', name: 'Alice' },
    'resource-prompt': { resourceType: 'Text', resourceId: '1' },
  };
  for (const prompt of (await client.listPrompts()).prompts) {
    const args = promptArgs[prompt.name] ?? Object.fromEntries((prompt.arguments || []).filter((a) => a.required).map((a) => [a.name, 'interop']));
    try {
      const res = await client.getPrompt({ name: prompt.name, arguments: args });
      report.prompts[prompt.name] = res.messages.length ? 'ok' : 'empty';
    } catch (err) {
      report.prompts[prompt.name] = `error: ${err.message}`;
      fail(`prompt ${prompt.name}`, err);
    }
  }
  const completion = await client
    .complete({ ref: { type: 'ref/prompt', name: 'completable-prompt' }, argument: { name: 'department', value: 'E' } })
    .catch((err) => (fail('completion', err), null));
  report.completion = completion?.completion?.values ?? null;
  await client.setLoggingLevel('warning').catch((err) => fail('logging/setLevel', err));

  await transport.terminateSession().catch(() => {});
  await client.close();
  clearTimeout(deadline);

  const checks = {
    everyToolOk: Object.values(report.tools).every((v) => v.startsWith('ok')),
    progressReceived: report.progress.length >= 4,
    samplingAnswered: serverRequests.sampling >= 1,
    elicitationAnswered: serverRequests.elicitForm >= 1,
    answersViaOtherReplica: routed.answer >= 2 && routed.answerStatuses.every((s) => s === 202),
    resourcesRead: Object.keys(report.resources).length > 0,
    promptsGot: Object.keys(report.prompts).length > 0,
    noFailures: report.failures.length === 0,
  };
  const ok = Object.values(checks).every(Boolean);
  console.log(JSON.stringify({ ok, checks, server: info, toolCount: tools.length, report, routed, serverRequests }));
  process.exit(ok ? 0 : 1);
} catch (err) {
  clearTimeout(deadline);
  console.log(JSON.stringify({ ok: false, reason: String(err && err.stack ? err.stack : err), report, routed, serverRequests }));
  process.exit(1);
}
