"""Reference forward, runtime runners and comparison: the proof that artifacts are right."""
