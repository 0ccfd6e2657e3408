"""Configuration files: WSL's gitconfig-style syntax, /etc/wsl.conf, and lxss's own settings."""
