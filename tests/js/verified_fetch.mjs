// An HTTP-only IPFS client: npm @helia/verified-fetch on the HTTP-only Helia stack (no libp2p,
// no bitswap), with one node as its ONLY delegated router (Routing V1 HTTP API: providers and
// IPNS records) and, through the providers it names, its ONLY trustless gateway.
//
//   node verified_fetch.mjs ROUTER_URL RESOURCE [TIMEOUT_MS]
//     ROUTER_URL  e.g. http://127.0.0.1:8787
//     RESOURCE    ipfs://CID[/path] or ipns://NAME[/path]
//
// Prints one JSON line: {status, headers, size, sha256, requests, error?}. `requests` lists
// every URL the client fetched; anything not on loopback is refused (and listed in `refused`),
// and DNS is disabled, so the client cannot reach anything but the node. Exit code 0 whenever
// a response came back (whatever its status), 1 when the fetch threw.
//
// The modules are looked up in HEARTH_VERIFIED_FETCH_DIR (default ~/.cache/hearth/verified-fetch,
// where scripts/install-test-deps.sh puts them); run with the Node 22 found there too.
import { createHash } from 'node:crypto'
import { createRequire } from 'node:module'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

const [routerUrl, resource, timeoutArg] = process.argv.slice(2)
if (routerUrl == null || resource == null) {
  console.error('usage: node verified_fetch.mjs ROUTER_URL ipfs://CID[/path]|ipns://NAME[/path] [TIMEOUT_MS]')
  process.exit(2)
}
const timeoutMs = Number(timeoutArg ?? 20000)

const dir = process.env.HEARTH_VERIFIED_FETCH_DIR ?? join(homedir(), '.cache', 'hearth', 'verified-fetch')
const require = createRequire(join(dir, 'package.json'))
const load = (name) => import(pathToFileURL(require.resolve(name)).href)
const { createHeliaLight } = await load('helia')
const { withHTTP } = await load('@helia/http')
const { createVerifiedFetchWithHelia } = await load('@helia/verified-fetch')
const { dns } = await load('@multiformats/dns')

// Loopback only: every request goes through the global fetch (the router client and the
// trustless-gateway client both use it); note it, refuse anything else.
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]'])
const requests = []
const refused = []
const realFetch = globalThis.fetch
globalThis.fetch = async (input, init) => {
  const url = new URL(input instanceof Request ? input.url : String(input))
  const accept = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined)).get('accept')
  if (!LOOPBACK.has(url.hostname)) {
    refused.push(url.href)
    throw new Error(`refused: ${url.href} is not on loopback`)
  }
  requests.push({ method: init?.method ?? 'GET', url: url.href, accept })
  return realFetch(input, init)
}
const noDns = async (domain) => { throw new Error(`DNS is disabled in this client (asked for ${domain})`) }

const helia = withHTTP(createHeliaLight({ dns: dns({ resolvers: { '.': noDns } }) }), {
  delegatedRouters: [routerUrl], // the node: /routing/v1/providers/{cid} and /routing/v1/ipns/{name}
  recursiveGateways: [], // no fallback gateway: blocks come only from providers the router names
  allowInsecure: true, // http://
  allowLocal: true // 127.0.0.1
})
await helia.start()
const verifiedFetch = await createVerifiedFetchWithHelia(helia)

const out = { resource, requests, refused }
let code = 0
try {
  const resp = await verifiedFetch(resource, { signal: AbortSignal.timeout(timeoutMs), allowInsecure: true, allowLocal: true })
  const body = new Uint8Array(await resp.arrayBuffer())
  out.status = resp.status
  out.headers = Object.fromEntries(resp.headers.entries())
  out.size = body.byteLength
  out.sha256 = createHash('sha256').update(body).digest('hex')
} catch (err) {
  out.error = `${err.name}: ${err.message}`
  code = 1
} finally {
  await verifiedFetch.stop().catch(() => {})
  await helia.stop().catch(() => {})
}
console.log(JSON.stringify(out))
process.exit(code)
