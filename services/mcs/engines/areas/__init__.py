"""The `Tx` protocol, one area per module (tasks, queue, agents, ...): each method is one query's worth of
work and decides no policy. `mcs.engines.base.Tx` composes them."""
