"""The wire: the msgpack message format and its schemas (protocol, schema), the ZeroMQ sockets
both sides use (transport) and CurveZMQ keys (auth). Knows nothing of the agent."""
