"""Sharding the ranking models with TorchRec DistributedModelParallel."""
