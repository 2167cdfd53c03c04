"""prepare's room: finding, sniffing and reading inputs (``listing``, ``sniffing``, ``columns``,
``reading``), checking their rows (``reasons``, ``checks``, ``dedup``; ``sources`` runs them in one
call), the prepare steps (``inputs``, ``quarantine``, ``prepare``), stable id maps, splits, the
synthetic data set, side information, titles, and the tables a prepared run holds (``prepared``)."""
