"""Where work runs: a verb's file job split into shards (``shards``: the plan, the shard store, the local
runner; ``sharded``: generate / score / label / eval-rm over shards, merged into the output the one-process
path writes, byte for byte) and run in this process or on Ray workers (``ray_engine``). See docs/scaling.md."""
