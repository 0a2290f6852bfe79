// Preloaded into a Node server a test starts (node -r loopback.cjs ...): a listen() given only a
// port listens on 127.0.0.1, not every interface, as every server the tests start must.
const net = require("net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "number" || typeof args[0] === "string") {
    if (typeof args[1] !== "string") args.splice(1, 0, "127.0.0.1");
  }
  return listen.apply(this, args);
};
