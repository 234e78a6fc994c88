"""One active controller: leader election on a coordination.k8s.io Lease, with the
`kubernetes` client's own elector (kubernetes.leaderelection, LeaseLock).

A replica that loses the Lease exits (as client-go's controllers do) and its supervisor starts
it again as a follower; one stopping on SIGTERM releases the Lease first, so a follower takes
over at its next retry instead of waiting out the lease.
"""

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

log = logging.getLogger(__name__)
logging.getLogger("leaderelection").setLevel(logging.WARNING)  # it logs every retry


@dataclass
class Election:
    name: str
    namespace: str
    identity: str
    lease_s: int = 15
    renew_s: float = 10.0
    retry_s: float = 2.0

    def __post_init__(self) -> None:
        self.leading = threading.Event()

    def run(self, lead: Callable[[], None], lost: Callable[[], None]) -> None:
        """Block as a follower until this replica holds the Lease, then call `lead` (in a
        thread) while renewing it; `lost` is called when a renewal fails."""
        def started() -> None:
            self.leading.set()
            log.info("%s leads (Lease %s/%s)", self.identity, self.namespace, self.name)
            lead()

        def stopped() -> None:
            self.leading.clear()
            lost()

        lock = LeaseLock(self.name, self.namespace, self.identity)
        config = electionconfig.Config(lock, lease_duration=self.lease_s,
                                       renew_deadline=self.renew_s, retry_period=self.retry_s,
                                       onstarted_leading=started, onstopped_leading=stopped)
        leaderelection.LeaderElection(config).run()

    def release(self) -> None:
        """Give the Lease up (holder cleared): followers take it without waiting it out."""
        if not self.leading.is_set():
            return
        api = client.CoordinationV1Api()
        try:
            lease = api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec and lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                api.replace_namespaced_lease(self.name, self.namespace, lease)
                log.info("%s released the Lease", self.identity)
        except ApiException as e:
            log.warning("releasing the Lease: %s", e)
