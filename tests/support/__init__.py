"""Real servers and real faults for the tests and the benchmark (nothing here is a mock)."""
