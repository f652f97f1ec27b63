"""The domain model: jobs, tasks, phases and their rules. No I/O lives here."""
