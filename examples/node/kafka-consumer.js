// Reads every destination of ibkr-bridge on Kafka with a kafkajs consumer group: decodes the
// CloudEvents binary mode (ce_* headers, value = data JSON), validates each event's data against
// its JSON Schema with ajv, and keeps the current state per state topic (bootstrap: a state topic
// read from its first record; a record with a null value removes its key).
//
//   node kafka-consumer.js --brokers localhost:9092 --asyncapi asyncapi.json --schemas ../../bridge/schemas
//
// Codecs: kafkajs decodes only gzip by itself; the bridge compresses with zstd by default, so the
// pure-JavaScript zstd decoder fzstd is registered below. (lz4 and snappy need their own codecs.)
'use strict'

const { Kafka, CompressionTypes, CompressionCodecs, logLevel } = require('kafkajs')
const fzstd = require('fzstd')
const { options, destinations, Tally, stopRequest, ready } = require('./common')

CompressionCodecs[CompressionTypes.ZSTD] = () => ({
  async compress() {
    throw new Error('this consumer only reads')
  },
  async decompress(buffer) {
    return Buffer.from(fzstd.decompress(buffer))
  },
})

// CloudEvents Kafka binary mode: ce_<name> headers; datacontenttype travels as content-type.
function attributesOf(headers) {
  const attributes = {}
  for (const [name, value] of Object.entries(headers || {})) {
    const text = Buffer.isBuffer(value) ? value.toString('utf8') : String(value)
    if (name.startsWith('ce_')) attributes[name.slice(3)] = text
    else if (name === 'content-type') attributes.datacontenttype = text
  }
  return attributes
}

async function main() {
  const opts = options(process.argv.slice(2), {
    brokers: 'localhost:9092',
    asyncapi: 'asyncapi.json',
    schemas: '../../bridge/schemas',
    group: 'ibkr-bridge-node-example',
    'streams-from': 'latest', // or 'beginning'; state topics are always read from their first record
    'stop-file': '',
    'ready-file': '',
    'timeout-ms': '0',
  })
  const all = destinations(opts.asyncapi)
  const stateTopics = new Set(all.filter(d => d.stateOf).map(d => d.address))
  const tally = new Tally(opts.schemas)
  const kafka = new Kafka({ clientId: 'ibkr-bridge-node-example', brokers: opts.brokers.split(','), logLevel: logLevel.WARN })
  // Streams: the consumer group resumes where it left off. State topics: read from their first
  // record at every start (the state is held in memory), so under a group of this start's own.
  const streams = kafka.consumer({ groupId: opts.group, maxWaitTimeInMs: 250 })
  const states = kafka.consumer({ groupId: `${opts.group}.state.${process.pid}.${Date.now()}`, maxWaitTimeInMs: 250 })
  const eachMessage = async ({ topic, message }) => {
    const attributes = attributesOf(message.headers)
    const data = message.value === null ? null : JSON.parse(message.value.toString('utf8'))
    tally.event(topic, message.key.toString('utf8'), attributes, data, stateTopics.has(topic))
  }
  await states.connect()
  await states.subscribe({ topics: [...stateTopics], fromBeginning: true })
  await states.run({ eachMessage })
  await streams.connect()
  await streams.subscribe({
    topics: all.filter(d => !d.stateOf).map(d => d.address),
    fromBeginning: opts['streams-from'] === 'beginning',
  })
  await streams.run({ eachMessage })
  let finish
  const finished = new Promise(resolve => (finish = resolve))
  ready(opts['ready-file'])
  const timer = setInterval(() => {
    const stop = stopRequest(opts['stop-file'])
    if (stop && stop.total !== undefined && tally.total() >= stop.total) finish(0)
  }, 50)
  const timeoutMs = Number(opts['timeout-ms'])
  const deadline = timeoutMs ? setTimeout(() => finish(1), timeoutMs) : null
  const stopSignal = () => finish(0)
  process.once('SIGTERM', stopSignal)
  process.once('SIGINT', stopSignal)
  const code = await finished
  clearInterval(timer)
  if (deadline) clearTimeout(deadline)
  await Promise.all([streams.disconnect(), states.disconnect()])
  process.stdout.write(JSON.stringify({ ...tally.report(), timedOut: code !== 0 }) + '\n')
  process.exitCode = code
}

main().catch(error => {
  console.error(error)
  process.exitCode = 2
})
