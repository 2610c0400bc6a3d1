"""The IoT domain's flow: ``python -m bytewax.run "flows.iot:get_flow()"``.

:mod:`flows.iot.flow` assembles it from the kit (:mod:`flows.kit`) and this package's
own logic: validation and anomaly rules (:mod:`~flows.iot.processor`), hopping device
windows (:mod:`~flows.iot.windows`) and the room interval join
(:mod:`~flows.iot.room_join`).
"""

from flows.iot.flow import FLOW, SPEC, build_flow, flow_dir, get_flow, run_flow

__all__ = ["FLOW", "SPEC", "build_flow", "flow_dir", "get_flow", "run_flow"]
