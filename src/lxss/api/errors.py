"""The errors of io.lxss.Service and org.varlink.service, one class each.

The service raises them; the wire carries their name and parameters; the client
turns a reply back into the same class (:func:`from_reply`) and the CLI words it.
Named after WSL's errors where WSL has one (WSL_E_DISTRO_NOT_FOUND ...).
"""

from __future__ import annotations

from lxss.errors import LxssError as LxssError

# typing costs ~10 ms to import: the client imports it only for type checkers.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

INTERFACE = "io.lxss.Service"


class VarlinkError(LxssError):
    """An error reply: `name` is the full Varlink error name."""

    name: ClassVar[str] = "org.varlink.service.InternalError"

    def __init__(self, **parameters: Any) -> None:
        self.parameters = parameters
        super().__init__(f"{self.name} {parameters}" if parameters else self.name)

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]


def _service(short: str) -> type[VarlinkError]:
    return type(short, (VarlinkError,), {"name": f"{INTERFACE}.{short}", "__module__": __name__})


def _varlink(short: str) -> type[VarlinkError]:
    name = f"org.varlink.service.{short}"
    return type(short, (VarlinkError,), {"name": name, "__module__": __name__})


DistroNotFound = _service("DistroNotFound")
DefaultDistroNotFound = _service("DefaultDistroNotFound")
DistroNameAlreadyExists = _service("DistroNameAlreadyExists")
InvalidDistributionName = _service("InvalidDistributionName")
InstallLocationInUse = _service("InstallLocationInUse")
ImportFailed = _service("ImportFailed")
BuildFailed = _service("BuildFailed")
NotALinuxDistribution = _service("NotALinuxDistribution")
ExportFailed = _service("ExportFailed")
MoveFailed = _service("MoveFailed")
InvalidState = _service("InvalidState")
UserNotFound = _service("UserNotFound")
InvalidArgument = _service("InvalidArgument")
PermissionDenied = _service("PermissionDenied")
VersionNotSupported = _service("VersionNotSupported")
StartFailed = _service("StartFailed")
LaunchFailed = _service("LaunchFailed")
ServiceBusy = _service("ServiceBusy")
TooManyDistributions = _service("TooManyDistributions")
InternalError = _service("InternalError")

InterfaceNotFound = _varlink("InterfaceNotFound")
MethodNotFound = _varlink("MethodNotFound")
MethodNotImplemented = _varlink("MethodNotImplemented")
InvalidParameter = _varlink("InvalidParameter")
ExpectedMore = _varlink("ExpectedMore")

_BY_NAME: dict[str, type[VarlinkError]] = {
    cls.name: cls for cls in VarlinkError.__subclasses__() if cls.__module__ == __name__
}


def from_reply(name: str, parameters: dict[str, Any]) -> VarlinkError:
    """The exception for an error reply; unknown names keep their name on a plain VarlinkError."""
    cls = _BY_NAME.get(name)
    if cls is None:
        cls = type(name.rsplit(".", 1)[-1], (VarlinkError,), {"name": name})
    return cls(**parameters)
