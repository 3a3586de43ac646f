// Reads every stream of ibkr-bridge on Redis with a consumer group (XREADGROUP / XACK, node-redis),
// validates each event's data against its JSON Schema with ajv, and keeps the current state:
//
//   bootstrap: MULTI { HGETALL <state hash>; XREVRANGE <stream> + - COUNT 1 } EXEC, then the group
//   is created on the stream at that last entry id, so what the group delivers is exactly what the
//   snapshot does not hold yet (nothing missed, nothing twice). A group that exists already (a
//   restarted consumer) resumes where it was: entries up to the snapshot's id are acknowledged
//   without touching the state.
//
//   node redis-consumer.js --url redis://localhost:6379 --asyncapi asyncapi.json --schemas ../../bridge/schemas
'use strict'

const { createClient } = require('redis')
const { options, destinations, Tally, stopRequest, ready } = require('./common')

const ATTRIBUTES = new Set(['specversion', 'id', 'source', 'type', 'time', 'subject', 'datacontenttype',
  'dataschema', 'sessionepoch', 'sequence'])

// The state hash and the stream's last entry id, read in one transaction.
async function snapshot(client, hash, stream) {
  const [fields, last] = await client.multi().hGetAll(hash).xRevRange(stream, '+', '-', { COUNT: 1 }).exec()
  const state = {}
  for (const [key, value] of Object.entries(fields)) state[key] = JSON.parse(value).event.id
  return { state, lastId: last.length ? last[0].id : '0-0' }
}

// Stream entry ids are <ms>-<seq>: compared as two numbers.
function after(id, than) {
  const [ms, seq] = id.split('-').map(BigInt)
  const [thanMs, thanSeq] = than.split('-').map(BigInt)
  return ms > thanMs || (ms === thanMs && seq > thanSeq)
}

async function createGroup(client, stream, group, id) {
  try {
    await client.xGroupCreate(stream, group, id, { MKSTREAM: true })
  } catch (error) {
    if (!String(error.message).startsWith('BUSYGROUP')) throw error // the group exists: resume it
  }
}

async function main() {
  const opts = options(process.argv.slice(2), {
    url: 'redis://localhost:6379',
    asyncapi: 'asyncapi.json',
    schemas: '../../bridge/schemas',
    group: 'ibkr-bridge-node-example',
    consumer: 'consumer-1',
    'streams-from': '$', // where the group starts on streams without a state hash ('0' = the first entry)
    'stop-file': '',
    'ready-file': '',
    'timeout-ms': '0',
  })
  const all = destinations(opts.asyncapi)
  const stateOf = {} // stream -> its state hash
  for (const d of all.filter(d => d.stateOf)) stateOf[d.stateOf] = d.address
  const tally = new Tally(opts.schemas)
  const client = createClient({ url: opts.url })
  await client.connect()
  const streams = all.filter(d => !d.stateOf).map(d => d.address)
  const snapshotIds = {} // stream -> the last entry id its snapshot holds
  for (const stream of streams) {
    const hash = stateOf[stream]
    if (hash) {
      const { state, lastId } = await snapshot(client, hash, stream)
      tally.states[hash] = state
      snapshotIds[stream] = lastId
      await createGroup(client, stream, opts.group, lastId)
    } else {
      await createGroup(client, stream, opts.group, opts['streams-from'])
    }
  }
  ready(opts['ready-file'])
  const deadline = Number(opts['timeout-ms']) ? Date.now() + Number(opts['timeout-ms']) : Infinity
  let timedOut = false
  for (;;) {
    const stopping = stopRequest(opts['stop-file']) !== null // then stop once caught up
    const reply = await client.xReadGroup(opts.group, opts.consumer, streams.map(key => ({ key, id: '>' })),
      { COUNT: 500, BLOCK: 200 })
    for (const { name, messages } of reply || []) {
      for (const { id, message } of messages) {
        const attributes = {}
        for (const [field, value] of Object.entries(message)) if (ATTRIBUTES.has(field)) attributes[field] = value
        tally.event(name, message.key, attributes, JSON.parse(message.data), false)
        // A group that already existed (a restart) may deliver entries the snapshot holds already.
        const hash = stateOf[name]
        if (hash && after(id, snapshotIds[name])) tally.states[hash][message.key] = attributes.id
        await client.xAck(name, opts.group, id)
      }
    }
    if (stopping && (!reply || reply.length === 0)) break
    if (Date.now() > deadline) {
      timedOut = true
      break
    }
  }
  await client.quit()
  process.stdout.write(JSON.stringify({ ...tally.report(), timedOut }) + '\n')
  process.exitCode = timedOut ? 1 : 0
}

main().catch(error => {
  console.error(error)
  process.exitCode = 2
})
