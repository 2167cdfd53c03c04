"""nightly's room: the run lock, the journal of the run in flight and its recovery, the quality
gate, history records, retention of old dates, and what a nightly summary holds."""
