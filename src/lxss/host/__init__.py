"""The host side of interop: serving a distribution's requests to run host programs
(lxss.host.interop) and lxss-host, wslhost's role (lxss.host.guardian). Runs as the owner,
in the host's namespaces: it is the `lxss` client, or a fork of it."""
