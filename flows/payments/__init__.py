"""The payments domain's flow: ``python -m bytewax.run "flows.payments:get_flow()"``.

:mod:`flows.payments.flow` assembles it from the kit (:mod:`flows.kit`) and this
package's own logic: validation, resends, fraud rules and the card-profile join
(:mod:`~flows.payments.processor`, :mod:`~flows.payments.fraud`), and merchant
windows (:mod:`~flows.payments.windows`).
"""

from flows.payments.flow import (
    FLOW,
    SPEC,
    build_flow,
    ensure_recovery_store,
    flow_commands,
    flow_dir,
    get_flow,
    recovery_dir,
    run_flow,
    settings_env,
    snapshot_interval_s,
)

__all__ = [
    "FLOW",
    "SPEC",
    "build_flow",
    "ensure_recovery_store",
    "flow_commands",
    "flow_dir",
    "get_flow",
    "recovery_dir",
    "run_flow",
    "settings_env",
    "snapshot_interval_s",
]
