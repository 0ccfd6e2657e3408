"""The lxss benchmark suite: lxss against its peers, measured in the same run."""
