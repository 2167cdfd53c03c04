"""nightly's room: the run lock, history records, retention of old dates and the nightly journal."""
