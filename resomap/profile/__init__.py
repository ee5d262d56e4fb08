"""The profile stage: latency, throughput, memory, FLOPs and energy of a model at a resolution."""
