"""Sources: open checkpoints, adapters and run directories without unpickling anything."""
