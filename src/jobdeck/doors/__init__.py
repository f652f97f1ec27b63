"""Front doors: each protocol translated onto the engine."""
