"""Resource Manager plumbing shared by the identity and machine steps: where it is, the SDK clients,
adaptive polling of long-running operations, and Azure errors turned into messages that say what
to do."""

from __future__ import annotations

import bisect
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.policies import RetryPolicy
from azure.mgmt.core.polling.arm_polling import ARMPolling

from provision import deadline
from provision.azure.credentials import SIGN_IN_HINT
from provision.cloud import Cloud, get_cloud
from provision.errors import AzureError, CredentialError, Forbidden, InvalidInput, NotFound, ProvisionError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.msi import ManagedServiceIdentityClient
    from azure.mgmt.postgresqlflexibleservers import PostgreSQLManagementClient

log = logging.getLogger("provision.azure")

RESOURCE_GROUP_API_VERSION = "2021-04-01"
LOCATIONS_API_VERSION = "2022-12-01"
# Azure serves the endpoints of a Resource Manager (its token audiences among them) at this version without a
# token; Azure Stack Hub too. Shape: hashicorp/go-azure-sdk sdk/environments/metadata (metaDataResponse20220901).
METADATA_API_VERSION = "2022-09-01"
CONNECTION_TIMEOUT = 10  # seconds, per attempt; never beyond what is left of the command's budget
READ_TIMEOUT = 60


class _Closeable(Protocol):
    def close(self) -> None: ...


Closeable = TypeVar("Closeable", bound=_Closeable)
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Once(Generic[K, V]):
    """Each key's value made once, by the first thread to ask; threads asking meanwhile wait for it, and
    every asker gets the same value, or the same error."""

    @dataclass
    class _Entry:
        done: threading.Event = field(default_factory=threading.Event)
        value: Any = None
        error: BaseException | None = None

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[K, Once._Entry] = {}

    def get(self, key: K, make: Callable[[], V]) -> V:
        with self._lock:
            entry = self._entries.get(key)
            first = entry is None
            if entry is None:
                entry = self._entries[key] = Once._Entry()
        if first:
            try:
                entry.value = make()
            except BaseException as error:
                entry.error = error
                raise
            finally:
                entry.done.set()
        else:
            entry.done.wait()
            if entry.error is not None:
                raise entry.error
        return entry.value


@dataclass(frozen=True)
class Arm:
    """Which Resource Manager to talk to, as which subscription, with a token for which audience.

    A context manager: leaving it closes the SDK clients and the credential it made (their sessions and
    sockets), and a later call makes new ones."""

    subscription: str
    cloud: Cloud
    endpoint: str | None = None
    audience: str | None = None  # --arm-audience; None: the cloud's, or what --arm-endpoint declares
    _opened: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, compare=False, repr=False)
    # A resource group cannot move: its location is read once per command, however many identities go there.
    _group_locations: Once[str, str] = field(default_factory=Once, compare=False, repr=False)
    polls: PollPace = field(default_factory=lambda: PollPace(), compare=False, repr=False)

    @classmethod
    def from_options(
        cls, subscription: str | None, cloud: str, endpoint: str | None, audience: str | None = None
    ) -> Arm:
        if not subscription:
            raise InvalidInput("--subscription (or AZURE_SUBSCRIPTION_ID) is required for Resource Manager commands")
        return cls(subscription, get_cloud(cloud), endpoint, audience)

    def __enter__(self) -> Arm:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.__dict__.pop("credential", None)
        self._opened.close()

    def _closed_on_exit(self, resource: Closeable) -> Closeable:
        self._opened.callback(resource.close)
        return resource

    @functools.cached_property
    def scope(self) -> str:
        """The token scope for Resource Manager. A custom endpoint (Azure Stack Hub, the emulator) has its own
        audience: a token for the public cloud's would be refused there."""
        if self.audience is not None:
            return _scope(self.audience)
        if self.endpoint is None:
            return self.cloud.arm_scope
        return _scope(declared_audience(self.base_url))

    @property
    def base_url(self) -> str:
        return (self.endpoint or self.cloud.resource_manager).rstrip("/")

    def url(self, path: str, api_version: str) -> str:
        return f"{self.base_url}{path}?api-version={api_version}"

    @functools.cached_property
    def credential(self) -> TokenCredential:
        """One credential for every client, so the credential chain runs, and a token is fetched, once."""
        from provision.azure.credentials import SharedToken, default_credential

        return self._closed_on_exit(SharedToken(default_credential()))

    def _client_options(self) -> dict[str, Any]:
        return {
            "credential": self.credential,
            "subscription_id": self.subscription,
            "base_url": self.base_url,
            "credential_scopes": [self.scope],
            "connection_timeout": CONNECTION_TIMEOUT,
            "read_timeout": READ_TIMEOUT,
            "retry_policy": BudgetRetryPolicy(),
        }

    def identity_client(self) -> ManagedServiceIdentityClient:
        from azure.mgmt.msi import ManagedServiceIdentityClient

        return self._closed_on_exit(ManagedServiceIdentityClient(**self._client_options()))

    def compute_client(self) -> ComputeManagementClient:
        from azure.mgmt.compute import ComputeManagementClient

        return self._closed_on_exit(ComputeManagementClient(**self._client_options()))

    def postgres_client(self) -> PostgreSQLManagementClient:
        from azure.mgmt.postgresqlflexibleservers import PostgreSQLManagementClient

        return self._closed_on_exit(PostgreSQLManagementClient(**self._client_options()))


def concurrently(*reads: Callable[[], Any]) -> list[Any]:
    """The results of independent reads (one request each, so bounded by its timeouts) made at once, in order.
    The first read runs in this thread; when several fail, the error of the earliest is raised, as if they had
    run one after the other, once the others are done. The others run in daemon threads: Ctrl-C ends the
    command without waiting for a read in flight."""
    results: list[Any] = [None] * len(reads)
    errors: list[BaseException | None] = [None] * len(reads)

    def run(index: int) -> None:
        try:
            results[index] = reads[index]()
        except BaseException as error:  # handed to the calling thread, which raises it
            errors[index] = error

    others = [threading.Thread(target=run, args=(i,), name="provision-read", daemon=True) for i in range(1, len(reads))]
    for thread in others:
        thread.start()
    try:
        results[0] = reads[0]()
    except Exception:
        for thread in others:
            thread.join()
        raise
    for thread in others:
        thread.join()
    for error in errors:
        if error is not None:
            raise error
    return results


def _scope(audience: str) -> str:
    return audience.rstrip("/") + "/.default"  # as the clouds' scopes (provision.cloud)


def declared_audience(base_url: str) -> str:
    """The first token audience a Resource Manager declares at /metadata/endpoints (served without a token),
    the one the Azure CLI uses too."""
    from azure.core import PipelineClient
    from azure.core.exceptions import AzureError as SdkError
    from azure.core.pipeline.policies import UserAgentPolicy
    from azure.core.rest import HttpRequest, HttpResponse

    url = f"{base_url}/metadata/endpoints?api-version={METADATA_API_VERSION}"
    budget = deadline.current()
    budget.check(f"reading {url}")
    hint = "Give the token audience with --arm-audience (or PROVISION_ARM_AUDIENCE)."
    try:
        # Like the management clients: their User-Agent (and AZURE_HTTP_USER_AGENT) and a few retries.
        policies = [UserAgentPolicy(sdk_moniker="provision"), BudgetRetryPolicy(retry_total=3)]
        client: PipelineClient[HttpRequest, HttpResponse] = PipelineClient(base_url, policies=policies)
        with client:
            response = client.send_request(
                HttpRequest("GET", url),
                connection_timeout=budget.cap(CONNECTION_TIMEOUT),
                read_timeout=budget.cap(READ_TIMEOUT),
            )
            response.raise_for_status()
            audiences = response.json()["authentication"]["audiences"]
    except SdkError as error:
        raise AzureError(f"could not read the token audience of {base_url} from {url}: {error}", hint=hint) from None
    except (ValueError, KeyError, TypeError):
        audiences = None
    if not isinstance(audiences, list) or not audiences or not isinstance(audiences[0], str):
        raise AzureError(f"{url} lists no token audience (authentication.audiences)", hint=hint)
    return audiences[0]


def resource_group_location(compute: ComputeManagementClient, arm: Arm, resource_group: str) -> str:
    """The location of a resource group (where `az identity create` puts an identity by default)."""
    from azure.core.rest import HttpRequest

    def read() -> str:
        path = f"/subscriptions/{arm.subscription}/resourcegroups/{resource_group}"
        with errors_explained(f"resource group {resource_group}", arm, resource_group):
            response = compute.send_request(HttpRequest("GET", arm.url(path, RESOURCE_GROUP_API_VERSION)))
            response.raise_for_status()
        return str(response.json()["location"])

    return arm._group_locations.get(resource_group.lower(), read)


def require_location(client: Any, arm: Arm, location: str) -> str:
    """`location` (as normalised by validate.location) if the subscription offers it, else InvalidInput naming
    the offered ones: a made-up region must fail before anything is written. One GET, any SDK client."""
    from azure.core.rest import HttpRequest

    path = f"/subscriptions/{arm.subscription}/locations"
    with errors_explained(f"the locations of subscription {arm.subscription}", arm):
        response = client.send_request(HttpRequest("GET", arm.url(path, LOCATIONS_API_VERSION)))
        response.raise_for_status()
    offered = sorted(str(entry["name"]) for entry in response.json().get("value", []))
    if location not in offered:
        shown = ", ".join(offered[:12]) + (", ..." if len(offered) > 12 else "")
        raise InvalidInput(
            f"--location {location!r}: subscription {arm.subscription} has no such region (it offers {shown})"
        )
    return location


class BudgetRetryPolicy(RetryPolicy):
    """azure-core's retries (429, 5xx, dropped connections) within the command's time budget: each
    attempt's connection and read timeouts are capped by what is left of it, a Retry-After is honoured
    only within it and never beyond deadline.MAX_SINGLE_WAIT (azure-core would sleep whatever it is
    told), and every wait is shown on stderr, so a Resource Manager that does not answer is seen."""

    def _configure_timeout(self, request: Any, absolute_timeout: float, is_response_error: bool) -> None:
        # azure-core calls this before every attempt: the one place to bound each attempt by the budget.
        budget = deadline.current()
        budget.check("waiting for Resource Manager to answer")
        super()._configure_timeout(request, absolute_timeout, is_response_error)
        request.context.options["connection_timeout"] = budget.cap(CONNECTION_TIMEOUT, CONNECTION_TIMEOUT)
        request.context.options["read_timeout"] = budget.cap(READ_TIMEOUT, READ_TIMEOUT)

    def sleep(self, settings: dict[str, Any], transport: Any, response: Any = None) -> None:
        asked = self.get_retry_after(response) if response is not None else None
        delay = self.get_backoff_time(settings) if asked is None else asked
        budget = deadline.current()
        what = f"answered {response.http_response.status_code}" if response is not None else "did not answer"
        log.warning("Resource Manager %s: retrying in %.1f s", what, budget.cap(delay))
        budget.sleep(delay, "waiting to retry a Resource Manager request")


class PollPace:
    """What the operations of one command share while they are awaited:

    - their polls, spaced at least 1/`per_second` s apart. Resource Manager gives a principal 250 reads
      in hand, refilled at 25 a second (learn.microsoft.com/azure/azure-resource-manager/management/
      request-limits-and-throttling): a fleet waiting on 25 machine updates, each polled twice a second,
      would spend them faster than they come back, and the next command would be throttled;
    - the shortest time one of them took: updates of one kind take about as long as each other, so an
      operation started later is first polled at TYPICAL_SHARE of it, not every 0.5 s from its start;
      at most MOST_SKIPPED seconds of polls are skipped, so a quick update after a slow one of another
      kind (a VM's after a scale set's) is seen at most that late.

    A lone operation is polled as its schedule says."""

    TYPICAL_SHARE = 0.8
    MOST_SKIPPED = 5.0

    def __init__(self, per_second: float = 20.0) -> None:
        self._spacing = 1.0 / per_second
        self._lock = threading.Lock()
        self._taken: list[float] = []  # the times (time.monotonic) kept for a poll, in order
        self.shortest: float | None = None  # seconds, from the start of an operation to its end being seen

    def delay(self, now: float, wanted: float) -> float:
        """The delay from `now` of the first time, at least `wanted` seconds away, that is `spacing` from every
        time kept for another poll; kept for this one."""
        with self._lock:
            self._taken = [taken for taken in self._taken if taken > now - self._spacing]
            at = now + wanted
            for taken in self._taken:
                if taken >= at + self._spacing:
                    break
                if taken > at - self._spacing:
                    at = taken + self._spacing
            bisect.insort(self._taken, at)
            return at - now

    def earliest(self, age: float) -> float:
        """Seconds an operation `age` seconds old waits at least before its next poll."""
        if self.shortest is None:
            return 0.0
        return max(0.0, min(self.TYPICAL_SHARE * self.shortest, self.MOST_SKIPPED) - age)

    def ended(self, took: float) -> None:
        with self._lock:
            self.shortest = took if self.shortest is None else min(self.shortest, took)


class AdaptivePolling(ARMPolling):
    """Polls a long-running operation every 0.5 s for its first 5 s, then every 1, 2 and 5 s as it drags
    on: Compute sends no Retry-After, and the SDK's default 30 s interval turns a typical 4 s identity
    update into 30 s. The first poll waits as the others do (azure-core's would go at once, to learn what
    the answer to the write already said: still running). A Retry-After, when sent, wins, within the
    command's time budget; when the budget is spent, polling ends with TimedOut (`doing` says what was
    awaited). The operations of one command share its `pace` (Arm.polls)."""

    # (elapsed seconds from, delay): most identity updates end within a few seconds.
    schedule = ((0.0, 0.5), (5.0, 1.0), (15.0, 2.0), (30.0, 5.0))

    def __init__(
        self,
        on_wait: Callable[[float], None] | None = None,
        doing: str = "polling an operation",
        pace: PollPace | None = None,
    ) -> None:
        super().__init__(timeout=self.schedule[0][1])
        self._started = time.monotonic()
        self._on_wait = on_wait
        self._doing = doing
        self._pace = pace
        self._polled = False

    def update_status(self) -> None:
        if not self._polled:
            self._polled = True
            self._sleep(self._extract_delay())
        super().update_status()
        if self._pace is not None and self.finished():
            self._pace.ended(time.monotonic() - self._started)

    def _extract_delay(self) -> float:
        delay = _retry_after(self._pipeline_response.http_response.headers) if self._pipeline_response else None
        now = time.monotonic()
        if delay is None:
            delay = next(step for since, step in reversed(self.schedule) if now - self._started >= since)
        if self._pace is not None:
            delay = self._pace.delay(now, max(delay, self._pace.earliest(now - self._started)))
        budget = deadline.current()
        budget.check(self._doing)
        delay = budget.cap(delay)
        if self._on_wait is not None:
            self._on_wait(delay)
        return delay


def _retry_after(headers: Any) -> float | None:
    """Seconds from a Retry-After header (Azure sends seconds, not dates), or None."""
    try:
        return max(0.0, float(headers["retry-after"]))
    except (KeyError, TypeError, ValueError):
        return None


# Which Azure role each kind of write needs, for the 403 message.
ROLE_TO_CREATE_IDENTITY = "Managed Identity Contributor on the resource group"
ROLE_TO_ATTACH = "Virtual Machine Contributor on the VM or scale set, and Managed Identity Operator on the identity"
# A write that names no identity (a removal sets it to null) is checked for the machine only.
ROLE_TO_UPDATE_MACHINE = "Virtual Machine Contributor on the VM or scale set"
ROLE_TO_READ = "Reader on the resource group"


@contextlib.contextmanager
def errors_explained(
    subject: str, arm: Arm, resource_group: str | None = None, needs_role: str = ROLE_TO_READ
) -> Iterator[None]:
    """Turn SDK exceptions raised while working on `subject` into ProvisionErrors that say what to do."""
    try:
        yield
    except ProvisionError:
        raise
    except ClientAuthenticationError as error:
        if error.response is None:  # no token at all: the credential chain failed
            raise CredentialError("could not get an access token for Resource Manager", hint=SIGN_IN_HINT) from None
        raise CredentialError(f"Resource Manager refused the access token ({_code(error)})") from None
    except HttpResponseError as error:
        if error.status_code == 403:
            # Azure's own message names the action, the scope and, for LinkedAuthorizationFailed, the linked
            # resource (an identity the caller may not assign): more precise than any guess made here.
            verb = "read" if needs_role == ROLE_TO_READ else "change"
            raise Forbidden(
                f"not allowed to {verb} {subject}: {_code(error)}: {_message(error)}",
                hint=f"The signed-in principal needs the Azure role {needs_role}.",
            ) from None
        if error.status_code == 404:
            raise NotFound(_not_found_message(subject, arm, resource_group, error)) from None
        raise AzureError(f"Resource Manager failed on {subject}: {_code(error)}: {_message(error)}") from None
    except ServiceRequestError as error:
        raise AzureError(
            f"could not reach Resource Manager at {arm.base_url} while working on {subject}: {error}"
        ) from None
    except ServiceResponseError as error:
        # The request went out, so it may have been carried out: only reading again can tell.
        raise AzureError(
            f"Resource Manager at {arm.base_url} sent no answer while working on {subject} ({error}); a change"
            " it was sent may have been made anyway, and running the command again is safe"
        ) from None


def _code(error: HttpResponseError) -> str:
    code = getattr(getattr(error, "error", None), "code", None)
    return str(code or error.status_code or "error")


def _message(error: HttpResponseError) -> str:
    message = getattr(getattr(error, "error", None), "message", None)
    return str(message or error.reason or "no details")


# The 404 codes that say the resource itself is missing; every other 404 (SubscriptionNotFound,
# ResourceGroupNotFound, ParentResourceNotFound, InvalidResourceType, ...) says the path to it is wrong.
ABSENT_CODES = frozenset({"ResourceNotFound", "NotFound"})


def is_absent(error: HttpResponseError) -> bool:
    """Whether a 404 means that the resource asked for does not exist (and its subscription and group do)."""
    return error.status_code == 404 and _code(error) in ABSENT_CODES


def _not_found_message(subject: str, arm: Arm, resource_group: str | None, error: HttpResponseError) -> str:
    code = _code(error)
    if code == "SubscriptionNotFound":
        return (
            f"subscription {arm.subscription} was not found at {arm.base_url} (check --subscription or"
            " AZURE_SUBSCRIPTION_ID, and that the signed-in principal has access to it)"
        )
    if code == "ResourceGroupNotFound":
        return f"resource group {resource_group} was not found in subscription {arm.subscription}"
    if code in ABSENT_CODES:
        return f"{subject} was not found in subscription {arm.subscription}"
    return f"Resource Manager found no {subject} in subscription {arm.subscription}: {code}: {_message(error)}"
