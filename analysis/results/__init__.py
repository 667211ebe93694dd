"""Results from recordings: the report with the paper's claims, the figure registry and its
style, curated reference recordings, memory accounting, and the paper's own numbers."""
