"""A2A (agent to agent, https://a2a-protocol.org) on the official `a2a-sdk`.

- `convert`: pure mappings between MCS tasks and A2A tasks, messages, artifacts and states.
- `face`: the api's A2A face: the agent card at /.well-known/agent-card.json and JSON-RPC at /a2a (a
  `RequestHandler` over MCS's store and event stream, served by the SDK's Starlette routes).
- `push`: push notifications for A2A push configs, rendered and signed by the notifier.

`mcs.agent.a2a` is the other direction: a mesh agent that forwards its tasks to a remote A2A agent.
"""
