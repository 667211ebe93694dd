"""The comparison protocol: presets (arms, models, lengths, seeds, the shared lr structure)
and running them (parallel jobs, lr tuning by rounds, the reported selection)."""
