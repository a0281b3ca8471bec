// What the console's pages share (loaded before each page's own script): element lookup, the
// JSON request that turns an error answer into an Error with the daemon's words, the message
// line, local time.
'use strict';
const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: options.body !== undefined ? { 'Content-Type': 'application/json' } : {} });
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function show(message, error) {
  $('message').textContent = message || '';
  $('error').textContent = error || '';
}

const localTime = (iso) => new Date(iso).toLocaleTimeString();
