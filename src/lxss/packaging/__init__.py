"""Files generated for the system around lxss: shell completions, man pages, lxss.conf."""
