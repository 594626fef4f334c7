"""Developer tools: the demo, the test caller, the echo bot and the benchmark."""
