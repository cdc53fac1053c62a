"""Starts LocalStack (host mode) with HTTP/1.1 keep-alive honoured for every client.

LocalStack's hypercorn gateway adds `Connection: close` to every response whose request does not
say `Connection: keep-alive` (`set_close_connection_header`, a workaround for boto and h11 in
localstack issue #6557). The Node.js SDK sends that header and reuses its connection; the Rust
SDK does not, so every local call from a Rust function would open a new TCP connection and
local latency and CPU figures would measure connection setup. This launcher turns that one
response handler into a no-op before the gateway is built, so every HTTP/1.1 client keeps its
connection, as against AWS. The twisted gateway would keep connections too, but listens on
0.0.0.0 whatever GATEWAY_LISTEN says. Verified with `ss -tan` (docs/local-stack.md).
"""

import runpy

import localstack.aws.handlers as handlers


def _keep_connection(_chain, _context, _response):
    return None


handlers.set_close_connection_header = _keep_connection
runpy.run_module("localstack.runtime.main", run_name="__main__", alter_sys=True)
