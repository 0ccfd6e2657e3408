"""lxss: the architecture of the Windows Subsystem for Linux, rebuilt for Linux hosts.

Kept empty on purpose: `lxss` starts with `python -I -S` and imports this
package first, so anything here is paid on every command.
"""

__version__ = "0.1.0"
