// A real MCP server over the 2024-11-05 HTTP+SSE transport, built on the official TypeScript
// SDK (`SSEServerTransport`), for the `sse` connector test (tests/tests/connectors.rs).
//
//   node server.mjs SDK_PREFIX TOKEN
//
// SDK_PREFIX is the npm prefix the pinned @modelcontextprotocol/sdk is installed under
// (tests/src/mcp_sdk.rs); TOKEN the bearer token every MCP request must carry. It listens on
// 127.0.0.1, port 0, prints `port=N` on stdout, and exits when its stdin closes.
//
//   GET  /sse                  the event stream: an `endpoint` event, then `message` events
//   POST /messages?sessionId=  a JSON-RPC message for that stream (202; the answer is an event)
//   GET  /mute                 an event stream that never names an endpoint
//   GET  /seen                 what it saw: {"authorizations": [...], "calls": [{tool, args}]}

import { createRequire } from 'node:module';
import http from 'node:http';
import path from 'node:path';

const [prefix, token] = process.argv.slice(2);
if (!prefix || !token) {
    console.error('usage: node server.mjs SDK_PREFIX TOKEN');
    process.exit(2);
}
const require = createRequire(path.join(path.resolve(prefix), 'package.json'));
const { McpServer } = require('@modelcontextprotocol/sdk/server/mcp.js');
const { SSEServerTransport } = require('@modelcontextprotocol/sdk/server/sse.js');
const { z } = require('zod');

const seen = { authorizations: [], calls: [] };
const transports = new Map();
const notes = [];

function mcpServer() {
    const server = new McpServer({ name: 'kortix-test-notes', version: '1.0.0' });
    const record = (tool, args) => seen.calls.push({ tool, args });
    server.registerTool(
        'search_notes',
        {
            description: 'Searches the notes',
            inputSchema: { query: z.string() },
            annotations: { readOnlyHint: true },
        },
        async (args) => {
            record('search_notes', args);
            return { content: [{ type: 'text', text: `1 note matches "${args.query}": groceries (eggs, milk)` }] };
        },
    );
    server.registerTool(
        'create_note',
        { description: 'Creates a note', inputSchema: { title: z.string() } },
        async (args) => {
            record('create_note', args);
            notes.push(args.title);
            return { content: [{ type: 'text', text: `created note "${args.title}" (#${notes.length})` }] };
        },
    );
    server.registerTool(
        'purge_notes',
        {
            description: 'Deletes every note',
            annotations: { readOnlyHint: false, destructiveHint: true },
        },
        async () => {
            record('purge_notes', {});
            notes.length = 0;
            return { content: [{ type: 'text', text: 'purged' }] };
        },
    );
    return server;
}

/// Records the request's Authorization header; answers 401 unless it is the bearer token.
function authorized(req, res) {
    const auth = req.headers.authorization ?? '';
    seen.authorizations.push(auth);
    if (auth === `Bearer ${token}`) {
        return true;
    }
    res.writeHead(401, { 'Content-Type': 'text/plain' }).end('missing or wrong bearer token');
    return false;
}

const httpServer = http.createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    try {
        if (req.method === 'GET' && url.pathname === '/sse') {
            if (!authorized(req, res)) return;
            const transport = new SSEServerTransport('/messages', res);
            transports.set(transport.sessionId, transport);
            res.on('close', () => transports.delete(transport.sessionId));
            await mcpServer().connect(transport);
        } else if (req.method === 'POST' && url.pathname === '/messages') {
            if (!authorized(req, res)) return;
            const transport = transports.get(url.searchParams.get('sessionId') ?? '');
            if (!transport) {
                res.writeHead(404, { 'Content-Type': 'text/plain' }).end('no such session');
                return;
            }
            await transport.handlePostMessage(req, res);
        } else if (req.method === 'GET' && url.pathname === '/mute') {
            res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
            res.write(': this stream never names an endpoint\n\n');
        } else if (req.method === 'GET' && url.pathname === '/seen') {
            res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(seen));
        } else {
            res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found');
        }
    } catch (e) {
        console.error(`${req.method} ${req.url}: ${e?.stack ?? e}`);
        if (!res.headersSent) {
            res.writeHead(500, { 'Content-Type': 'text/plain' }).end(String(e));
        }
    }
});

httpServer.listen(0, '127.0.0.1', () => {
    console.log(`port=${httpServer.address().port}`);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
