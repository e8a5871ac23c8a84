"""Training components, each carrying its config: distributed setup, optimizers and schedule, train
state (saved and loaded in one place), steps, logging sinks, memory, and the evaluation loop."""
