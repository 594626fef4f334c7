"""The bot side of a call, free of I/O: dialects (the wire protocols bots speak) and their events."""
