// What both consumers share: the destinations (from the bridge's AsyncAPI document), the JSON
// Schemas of the event data (ajv, draft 2020-12), command-line options and the exit condition.
'use strict'

const fs = require('node:fs')
const path = require('node:path')
const Ajv2020 = require('ajv/dist/2020')

function options(argv, defaults) {
  const opts = { ...defaults }
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, '')
    if (!(name in defaults) || i + 1 >= argv.length) {
      throw new Error(`unknown option or missing value: ${argv[i]} (options: ${Object.keys(defaults).join(', ')})`)
    }
    opts[name] = argv[i + 1]
  }
  return opts
}

// Every channel of `ibkr-bridge asyncapi`: { address, stateOf } (stateOf: for a state destination
// (a compacted topic, a hash), the stream whose latest event per key it keeps; else null).
function destinations(asyncapiFile) {
  const doc = JSON.parse(fs.readFileSync(asyncapiFile, 'utf8'))
  return Object.values(doc.channels).map(channel => ({
    address: channel.address,
    stateOf: channel['x-state-of'] || null,
  }))
}

// ajv with every shipped schema (`ibkr-bridge schemas --out DIR`), looked up by `dataschema`.
function validators(schemaDir) {
  const ajv = new Ajv2020({ allErrors: true })
  for (const file of fs.readdirSync(schemaDir).filter(f => f.endsWith('.json'))) {
    ajv.addSchema(JSON.parse(fs.readFileSync(path.join(schemaDir, file), 'utf8')))
  }
  return dataschema => {
    const validate = ajv.getSchema(dataschema)
    if (!validate) throw new Error(`no schema ${dataschema}`)
    return validate
  }
}

// Counts what a consumer saw and checks every event's data against its schema.
class Tally {
  constructor(schemaDir) {
    this.schemaOf = validators(schemaDir)
    this.consumed = {}
    this.invalid = []
    this.states = {}
    this.types = {}
  }

  // One event: attributes (CloudEvents), data (parsed JSON, or null for a tombstone).
  event(destination, key, attributes, data, state) {
    this.consumed[destination] = (this.consumed[destination] || 0) + 1
    if (data !== null) {
      this.types[attributes.type] = (this.types[attributes.type] || 0) + 1
      const validate = this.schemaOf(attributes.dataschema)
      if (!validate(data)) this.invalid.push({ destination, id: attributes.id, errors: validate.errors })
    }
    if (state) {
      const map = (this.states[destination] ||= {})
      if (data === null) delete map[key]  // a record without data: the key left the state
      else map[key] = attributes.id
    }
  }

  total() {
    return Object.values(this.consumed).reduce((a, b) => a + b, 0)
  }

  report() {
    return { consumed: this.consumed, types: this.types, invalid: this.invalid, states: this.states }
  }
}

// The stop file, once it exists: {"total": N} (stop after N records) or {} (stop once caught up).
function stopRequest(stopFile) {
  if (!stopFile || !fs.existsSync(stopFile)) return null
  const text = fs.readFileSync(stopFile, 'utf8')
  return text ? JSON.parse(text) : {}
}

// Tells whoever started the consumer that the bootstrap is done (an empty file).
function ready(readyFile) {
  if (readyFile) fs.writeFileSync(readyFile, '')
}

module.exports = { options, destinations, validators, Tally, stopRequest, ready }
