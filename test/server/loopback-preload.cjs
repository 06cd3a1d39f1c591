// Preloaded with `node -r` in front of y-webrtc's signaling server (which has no host option and binds every
// interface): forces every net.Server#listen of the process onto 127.0.0.1 and reports the bound port on stdout.
'use strict'
const net = require('node:net')

const listen = net.Server.prototype.listen
net.Server.prototype.listen = function listenOnLoopback(...args) {
  const first = args[0]
  let port = 0
  if (first !== null && typeof first === 'object') port = Number(first.port ?? 0)
  else if (first !== undefined && typeof first !== 'function') port = Number(first)
  const callback = args.find((a) => typeof a === 'function')
  this.once('listening', () => {
    const a = this.address()
    process.stdout.write(`LISTENING ${a.address} ${a.port}\n`)
  })
  return callback ? listen.call(this, port, '127.0.0.1', callback) : listen.call(this, port, '127.0.0.1')
}
