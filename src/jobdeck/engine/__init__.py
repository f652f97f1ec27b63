"""The engine: the rules of jobs and the only writer of their state."""
